"""Read contact details out of what a visitor wrote: a deterministic extractor and an LLM one.

Extractors only *find* values; nothing they return is trusted. ``validate_found``
runs the findings through the same validation as an agent's API write
(``clean_contact_input`` with the agent's Actor) and drops each value that
fails, recording why, so a bad email or phone never reaches a contact.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
import requests
from django.conf import settings

from contacts.models import CustomField
from contacts.normalize import (
    HONORIFICS,
    InvalidEmail,
    InvalidPhone,
    email_normalize,
    is_blank,
    parse_phone,
)
from contacts.services import TEXT_ONLY_FIELDS, clean_contact_input
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from crm_hub.unstorable import unstorable_text

logger = logging.getLogger(__name__)

RULES = "rules"
LLM = "llm"
EXTRACTORS = (RULES, LLM)

# Identity (tax/ID numbers) is left out on purpose: a guessed ID number would move a person's identity.
LLM_CONTACT_FIELDS: tuple[str, ...] = (
    "name", "phone", "email", "company", "position", "birthday",
    "zip_code", "country", "state", "city", "district", "street", "number", "complement",
)
IDENTITY_FIELDS = ("name", "phone", "email")
MAX_DROPPED_VALUE = 200
# A transcript pasted full of addresses (a mailing list, a log) is no introduction: past these, values are
# counted, not read or listed one by one (200 KB of addresses took 22 s and stored 14,000 drops).
MAX_CANDIDATES = 100
MAX_DROPPED = 50
# Custom field types the rules extractor can read without guessing.
PATTERN_TYPES = (CustomField.Type.EMAIL, CustomField.Type.PHONE, CustomField.Type.URL)
CHOICE_TYPES = (CustomField.Type.SINGLE_CHOICE, CustomField.Type.MULTIPLE_CHOICE)
# How far after a field's label ("my website is ...") its value may start.
LABEL_WINDOW = 60


@dataclass
class Extraction:
    """What an extractor found (raw, unvalidated until ``validate_found``) and what it dropped."""

    extractor: str
    contact: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)
    dropped_more: int = 0  # dropped beyond MAX_DROPPED, counted only
    error: dict[str, str] | None = None
    fallback: str = ""

    def drop(self, field_name: str, value: Any, reason: str) -> None:
        if len(self.dropped) >= MAX_DROPPED:
            self.dropped_more += 1
            return
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        # The record is stored as JSON: a NUL or a lone surrogate from the LLM would be a 500, so it never gets there.
        self.dropped.append({
            "field": _without_nul(field_name), "value": _without_nul(text)[:MAX_DROPPED_VALUE],
            "reason": _without_nul(reason),
        })

    @property
    def has_identity(self) -> bool:
        return any(self.contact.get(key) for key in IDENTITY_FIELDS)

    def as_record(self) -> dict[str, Any]:
        """Return the JSON kept on ``Conversation.extraction``."""
        found: dict[str, Any] = dict(self.contact)
        if self.custom:
            found["custom"] = dict(self.custom)
        record: dict[str, Any] = {
            "extractor": self.extractor, "found": found, "dropped": list(self.dropped), "error": self.error,
        }
        if self.fallback:
            record["fallback"] = self.fallback
        if self.dropped_more:
            record["dropped_more"] = self.dropped_more
        return record


_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _without_nul(text: str) -> str:
    """``text`` without NUL and lone surrogates, which no database stores."""
    return _UNSTORABLE_CHARACTERS.sub("", text)


class ExtractorFailed(Exception):
    """The extractor could not produce an answer (timeout, HTTP error, reply that is not JSON)."""

    def __init__(self, code: str, message: str):
        message = _without_nul(message)
        super().__init__(message)
        self.code = code
        self.message = message


def ai_custom_fields() -> list[CustomField]:
    return list(CustomField.objects.filter(allow_for_ai=True).order_by("position", "id"))


# --- Deterministic extractor ---------------------------------------------------------------

_EMAIL_CHARACTER = r"[^\s<>()\[\]{},;:\"'`]"
# The address stops before a sentence's closing "." (or "!", "?"): swallowed, it hid the sentence end from the
# cue reading below, so "My colleague's email is bob@x.com. Reach me at ..." read as one sentence. A domain
# that is nothing but such marks ("foo@.") is still taken whole, so it is dropped as invalid, not ignored.
# It starts where a run of address characters starts: tried from inside a long run without an "@",
# each start rescanned the run, quadratic in a visitor's message.
EMAIL_CANDIDATE = re.compile(rf"(?<!{_EMAIL_CHARACTER}){_EMAIL_CHARACTER}+@(?:{_EMAIL_CHARACTER}*[^\s<>()\[\]{{}},;:\"'`.!?]|{_EMAIL_CHARACTER}+)")
URL_CANDIDATE = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
TRAILING_PUNCTUATION = ".,;:!?)]}'\""
# Conservative on purpose: a lead-in phrase, then one to three capitalised words.
# "This is ..." is left out: agents hear "this is Acme Corp" as often as a person's name.
# The lead-in alone: its tail is read from the text after it, so one lead-in ("I'm not sure.") does not
# swallow the next ("My name is Li Wei") as it would as part of one match.
NAME_LEAD_IN = re.compile(r"(?i:\b(my name is|my name's|i am|i'm|i’m))\s+")
EXPLICIT_LEAD_INS = frozenset({"my name is", "my name's"})
NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'’.-]*(?:['’-][^\W\d_]+)*")
NOT_NAME_WORDS = frozenset(
    """a an the not just so very also here there fine good great ok okay sorry interested looking calling
    trying writing from in at on with and but or hoping glad happy sure new back available busy free ready
    wondering still really currently only""".split()
)


# "I'm Head of Operations", "I am the Sales Director": a job, not a name.
JOB_TITLE_WORDS = frozenset(
    """head chief director manager ceo cto cfo coo cmo cio founder co-founder cofounder owner president vp
    lead engineer developer consultant partner officer coordinator assistant analyst specialist supervisor
    executive administrator representative intern student""".split()
)


def _strip_trailing(text: str) -> str:
    return text.rstrip(TRAILING_PUNCTUATION)


def _find_name(text: str) -> str:
    """The name after "my name is" (first) or "I'm"/"I am": up to three capitalised words, titles left out."""
    found = []
    for lead in NAME_LEAD_IN.finditer(text):
        name = _name_after(text[lead.end(): lead.end() + 80])
        if name:
            found.append((lead.group(1).casefold() not in EXPLICIT_LEAD_INS, name))
    # "Hello! I am interested. My name is Anna Berg": the explicit introduction wins.
    return min(found, key=lambda item: item[0])[1] if found else ""


def _name_after(rest: str) -> str:
    words: list[str] = []
    position = 0
    while len(words) < 3:
        match = NAME_WORD.match(rest, position)
        if match is None:
            break
        word = match.group(0)
        if not word[0].isupper() or word.casefold() in NOT_NAME_WORDS:
            break
        position = match.end()
        dotted = rest[position: position + 1] == "."
        if dotted:
            position += 1
        # A title before the name ("Dr. Jane Doe", "Mr Smith") is no part of it: read past it.
        is_title = not words and word.casefold() in HONORIFICS
        if dotted and len(word) == 1 and not is_title:
            words.append(word + ".")  # an initial: "J. R. Smith"
        elif not is_title:
            words.append(word)
            if dotted:
                break  # the sentence ends here
        gap = re.match(r"[ \t]+", rest[position:])
        if gap is None:
            break
        position += gap.end()
    if not words or any(w.casefold() in JOB_TITLE_WORDS for w in words) or all(w.endswith(".") for w in words):
        return ""
    if re.match(r"(?i)of\b", rest[position:]):  # "I'm Marketing of ..." reads as a role
        return ""
    return " ".join(words)


def _label_cues(definition: CustomField) -> list[str]:
    cues = {definition.label.strip().casefold(), definition.key.replace("_", " ").replace("-", " ").casefold()}
    return [cue for cue in cues if len(cue) >= 3]


def _after_label(text: str, definition: CustomField, pattern: re.Pattern) -> list[str]:
    """Return values matching ``pattern`` that follow the field's label closely ("my website is ...")."""
    lowered = text.casefold()
    values = []
    for cue in _label_cues(definition):
        for label in re.finditer(re.escape(cue), lowered):
            window = text[label.end(): label.end() + LABEL_WINDOW]
            match = pattern.search(window)
            if match:
                values.append(_strip_trailing(match.group(0)))
    return values


def _phones_at(text: str, region: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(phone, where it starts) for each phone in the text: E.164, with " ext. N" when the visitor gave an
    extension (parsed back the same way on write); and the runs given as a phone that are none."""
    found = []
    taken: list[tuple[int, int]] = []
    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        number = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
        found.append((number + (f" ext. {m.number.extension}" if m.number.extension else ""), m.start))
        taken.append((m.start, m.end))
    unreadable = []
    # What the matcher does not read but every write path does (contacts.normalize.parse_phone): a
    # leading 00 as the international prefix, Mexico's old "+52 1" mobiles. They were lost without a trace.
    for m in PHONE_LIKE.finditer(text):
        if any(start < m.end() and m.start() < end for start, end in taken):
            continue
        international = m.group(0).startswith(("00", "+", "011"))
        # A national-looking run the matcher passed over is a date or a reference, unless it is said
        # as a number ("call me 555-0000"): then it is a phone that does not parse, recorded as such.
        if not international and not (sum(ch.isdigit() for ch in m.group(0)) >= 7 and _GIVEN_AS_PHONE.search(text[max(0, m.start() - 80): m.start()])):
            continue
        try:
            phone = parse_phone(m.group(0), region=region)
        except InvalidPhone:
            unreadable.append(m.group(0))
            continue
        if international:
            found.append((phone.e164 + (f" ext. {phone.extension}" if phone.extension else ""), m.start()))
    return sorted(found, key=lambda item: item[1]), unreadable


def _phones_in(text: str, region: str) -> list[str]:
    return [phone for phone, _start in _phones_at(text, region)[0]]


# Words that present what follows as a phone number, close before it ("order number 12345678" is none).
_GIVEN_AS_PHONE = re.compile(
    r"\b(?:call|phone|mobile|cell|tel|telephone|whatsapp|text|sms|ring|reach|(?:my|our)\s+number)\b\W*(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)


# At most 40 characters between the first and last digit (longer is no phone): unbounded, each start in a
# long run of "(" or "-" rescanned the run, and one pasted message held a worker for minutes.
PHONE_LIKE = re.compile(r"\+?[\d(][\d\s().-]{5,40}\d")


def _choices(definition) -> list:
    # A list is the only shape the admin saves; anything older is no choice at all.
    return definition.choices if isinstance(definition.choices, list) else []


# A channel's name used to give a detail is not a preference for that channel: "my email is ...",
# "phone number:", "WhatsApp: +44 ..." (other choice words are taken wherever they stand).
_DETAIL_WORDS = frozenset({"email", "e-mail", "mail", "phone", "telephone", "mobile", "cell", "whatsapp", "sms",
                           "text", "telegram", "signal"})
_GIVING_A_DETAIL_AFTER = re.compile(
    r"\s*(?:address|number|id\b|:|(?:(?:is|at|on)\s+)?(?:[+(]?\d|\S+@))", re.IGNORECASE
)
_GIVING_A_DETAIL_BEFORE = re.compile(r"\b(?:my|our|his|her|their)\s+$", re.IGNORECASE)


def _choice_mentions(text: str, choices: Sequence[Any]) -> list[str]:
    found = []
    for choice in choices:
        word = str(choice).strip()
        if not word:
            continue
        # Not inside an address or a domain: "nora@email.com" names no channel.
        for match in re.finditer(rf"(?<![\w@.]){re.escape(word)}(?![\w@]|\.\w)", text, re.IGNORECASE):
            if word.casefold() in _DETAIL_WORDS and (
                _GIVING_A_DETAIL_BEFORE.search(text[: match.start()]) or _GIVING_A_DETAIL_AFTER.match(text, match.end())
            ):
                continue
            found.append(str(choice))
            break
    return found


def extract_with_rules(texts: Iterable[str], *, definitions: Sequence[CustomField] | None = None) -> Extraction:
    """Find name, phone, email and pattern-typed AI custom fields in the visitor's messages."""
    texts = [t for t in texts if t]
    definitions = list(ai_custom_fields() if definitions is None else definitions)
    region = settings.CRM_DEFAULT_PHONE_REGION
    result = Extraction(extractor=RULES)
    claimed: set[str] = set()

    for definition in definitions:
        if definition.type in PATTERN_TYPES:
            pattern = {
                CustomField.Type.EMAIL: EMAIL_CANDIDATE, CustomField.Type.PHONE: PHONE_LIKE,
                CustomField.Type.URL: URL_CANDIDATE,
            }[definition.type]
            values = [v for text in texts for v in _after_label(text, definition, pattern)]
            if values:
                result.custom[definition.key] = values[0]
                claimed.add(values[0].casefold())
        elif definition.type in CHOICE_TYPES:
            mentioned: list[str] = []
            for text in texts:
                mentioned += [c for c in _choice_mentions(text, _choices(definition)) if c not in mentioned]
            if definition.type == CustomField.Type.MULTIPLE_CHOICE and mentioned:
                result.custom[definition.key] = mentioned
            elif len(mentioned) == 1:
                result.custom[definition.key] = mentioned[0]
            elif len(mentioned) > 1:
                result.drop(f"custom.{definition.key}", mentioned,
                            "ambiguous: the visitor mentioned more than one choice")

    claimed_phones = set()
    for key, value in result.custom.items():
        if isinstance(value, str) and any(d.key == key and d.type == CustomField.Type.PHONE for d in definitions):
            claimed_phones.update(_phones_in(value, region))

    texts = [_without_quoted_reply(text) for text in texts]
    emails: list[_Candidate] = []
    phones: list[_Candidate] = []
    for index, text in enumerate(texts):
        for match in EMAIL_CANDIDATE.finditer(text):
            if len(emails) >= MAX_CANDIDATES:
                result.drop("email", match.group(0), f"not read: more than {MAX_CANDIDATES} addresses in the transcript")
                continue
            candidate = _strip_trailing(match.group(0))
            if candidate.casefold() in claimed:
                continue
            try:
                normalized = email_normalize(candidate)
            except InvalidEmail:
                result.drop("email", candidate, "invalid_email: not a valid email address")
                continue
            emails.append(_Candidate.at(normalized, texts, index, match.start()))
        read, unreadable = _phones_at(text, region)
        for value, start in read:
            if value not in claimed_phones and len(phones) < MAX_CANDIDATES:
                phones.append(_Candidate.at(value, texts, index, start))
        for raw in unreadable:
            result.drop("phone", raw, "invalid_phone: not a valid phone number")
        if "name" not in result.contact:
            name = _find_name(text)
            if name:
                result.contact["name"] = name
    for field_name, candidates in (("email", emails), ("phone", phones)):
        chosen, reasons = _choose(candidates, field_name)
        if chosen is not None:
            result.contact[field_name] = chosen
        listed = {d["value"] for d in result.dropped}
        for candidate in candidates:
            if candidate.value != chosen and candidate.value not in listed:
                listed.add(candidate.value)
                result.drop(field_name, candidate.value, reasons[candidate.value])
    name = result.contact.get("name")
    chosen_words = {str(v).casefold() for value in result.custom.values() for v in (value if isinstance(value, list) else [value])}
    if name and name.casefold() in chosen_words:
        # "I am Pro at this" names the plan the visitor is on, not the visitor.
        result.drop("name", result.contact.pop("name"), "not a name: the word is a choice the visitor mentioned")
    return result


# --- Choosing the visitor's own email and phone among several ---------------------------------

# Quoted replies are someone else's words: "On Mon, 3 May, Acme Support <support@acme.example> wrote:" and
# everything after it, "-----Original Message-----" blocks, and lines starting with ">".
_QUOTE_HEADER = re.compile(
    r"^(?:On .{0,300}?wrote:|-{2,}\s*Original Message\s*-{2,}|From: .+\n(?:.*\n){0,3}?(?:Sent|Date): .+)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_LINE = re.compile(r"^\s*>.*$\n?", re.MULTILINE)
# Said just before a detail: it is the visitor's own ("reach me at", "my cell", "Direct:") or someone
# else's ("my colleague ...", "our main line", "support"). The nearest cue before a value decides whose it
# is: in "my colleague is at bob@x.com, reach me at ana@x.com" any cue earlier in the sentence would hand
# both addresses "colleague", when each belongs to its own clause.
# "my"/"our"/"his" before a person or a line is part of that cue: "My colleague" is the colleague's, and
# the "My" is no claim of the visitor's own.
# Another person's ("my colleague", "his") is never the visitor's; a shared line ("our main line", "the
# office") is the visitor's organisation's: kept when the visitor gave nothing of their own.
_OTHER_PERSON_WORDS = (
    r"colleague|coworker|co-worker|boss|manager|assistant|friend|wife|husband|partner|brother|sister|"
    r"mother|father|son|daughter|his|her|their"
)
_SHARED_LINE_WORDS = r"main line|switchboard|reception|office|support|sales team|toll[- ]free|fax|company"
# "direct", "cell", ... say what kind of line, not whose: they are the visitor's own unless an owner named
# earlier in their clause claims them ("her cell", "my colleague's direct line", "my cell").
_CUE = re.compile(
    rf"(?i)\b(?:(?P<other>(?:(?:my|our|his|her|their)\s+)?(?:{_OTHER_PERSON_WORDS}))"
    rf"|(?P<shared>(?:(?:my|our|his|her|their|the)\s+)?(?:{_SHARED_LINE_WORDS}))"
    r"|(?P<self>me|my|mine|i'm|i am|i’m)|(?P<line>direct|personal|cell|mobile))\b"
)
# How far before a value a cue still speaks for it: "my" is a common word, so a self cue must be closer.
_CUE_REACH = {"self": 40, "other": 60, "shared": 60}
# "I'm the", "I am an", "as the" just before a role word: the visitor describing themselves.
_SELF_DESCRIPTION = re.compile(r"(?i)\b(?:i'?m|i’m|i am|as)\s+(?:the|a|an|your)\s+(?:[\w-]+\s+){0,2}$")
_SENTENCE_END = re.compile(r"[.!?\n]")
_CLAUSE_END = re.compile(r"[,;]")
# "Oops, typo: it's actually ...", "sorry, I meant ...": what follows replaces what came before.
_CORRECTION_CUE = re.compile(r"(?i)\b(?:actually|typo|correction|i meant|sorry|wrong|instead|rather|corrected)\b")


def _without_quoted_reply(text: str) -> str:
    header = _QUOTE_HEADER.search(text)
    if header is not None:
        text = text[: header.start()]
    return _QUOTED_LINE.sub("", text)


@dataclass(frozen=True)
class _Candidate:
    value: str
    order: tuple[int, int]  # (message, offset): where it was written
    corrected: bool  # written after a correction cue, later than another candidate could be
    own: bool
    someone_elses: bool  # another person's, or a shared line: any value of the visitor's own comes first
    another_persons: bool  # never the visitor's, even when it is the only one

    @classmethod
    def at(cls, value: str, texts: list[str], index: int, start: int) -> _Candidate:
        # Other addresses and numbers in between are no sentence ends ("x@acme.com", "561.555.0192").
        before = PHONE_LIKE.sub("PHONE", EMAIL_CANDIDATE.sub("EMAIL", texts[index][:start]))
        whose = _whose(before)
        return cls(
            value=value, order=(index, start),
            corrected=bool(_CORRECTION_CUE.search(before[-80:])),
            own=whose == "self",
            someone_elses=whose in ("other", "shared"),
            another_persons=whose == "other",
        )


def _whose(before: str) -> str:
    """Whose the value written right after ``before`` is: "self", "other", "shared", or "" when nothing says.

    Only the value's own sentence counts, and in it the nearest cue that is close enough.
    """
    sentence = before[max((m.end() for m in _SENTENCE_END.finditer(before)), default=0):]
    cues: list[tuple[str, int]] = []  # (whose, where the cue ends), in the order written
    for match in _CUE.finditer(sentence):
        kind = match.lastgroup or ""
        if kind in ("other", "shared") and _SELF_DESCRIPTION.search(sentence, 0, match.start()):
            kind = "self"  # "I'm the office manager": the visitor's own job, not another person
        if kind == "line":
            owner = cues[-1] if cues else None
            # Past a "," or ";" the clause changed: "our main line is ...; direct: ..." is the visitor's own.
            if owner is not None and not _CLAUSE_END.search(sentence, owner[1], match.start()):
                kind = owner[0]
            else:
                kind = "self"
        cues.append((kind, match.end()))
    for kind, end in reversed(cues):
        if len(sentence) - end <= _CUE_REACH[kind]:
            return kind
    return ""


def _choose(candidates: list[_Candidate], field_name: str) -> tuple[str | None, dict[str, str]]:
    """Return the visitor's own value among the candidates, and why each other one was left out.

    A correction wins over what it corrects (the last one written after "actually", "sorry", ...);
    otherwise the first said as the visitor's own ("reach me at", "my cell", "Direct:") and not
    someone else's ("my colleague", "our main line"); otherwise the first that is not someone else's.
    A value only ever said as another person's is never the visitor's: written to the contact, it
    made a contact of the colleague and moved the conversation to it. (A shared line, "our office",
    is kept when nothing else is given.)
    """
    distinct = {c.value for c in candidates}
    if not distinct:
        return None, {}
    persons = [c for c in candidates if c.another_persons]
    if persons:
        kept = [c for c in candidates if not c.another_persons]
        if not kept:
            return None, {c.value: f"said as someone else's {field_name}" for c in candidates}
        chosen, reasons = _choose(kept, field_name)
        return chosen, {**{c.value: f"said as someone else's {field_name}" for c in persons}, **reasons}
    if len(distinct) == 1:
        return candidates[0].value, {}
    ordered = sorted(candidates, key=lambda c: c.order)
    corrections = [c for c in ordered[1:] if c.corrected and not c.someone_elses]
    if corrections:
        reason = f"corrected: a later message gave another {field_name}"
        return corrections[-1].value, {c.value: reason for c in candidates}
    chosen = (next((c for c in ordered if c.own and not c.someone_elses), None)
              or next((c for c in ordered if not c.someone_elses), None) or ordered[0])

    def why(candidate: _Candidate) -> str:
        # Each value left out is told by what holds for it, not by the rule that picked the winner.
        if candidate.someone_elses:
            return f"said as someone else's {field_name}"
        if chosen.own:
            return f"the visitor gave another {field_name} as their own"
        return f"another {field_name} was found first; only one is kept"

    return chosen.value, {c.value: why(c) for c in candidates}


# --- LLM extractor (OpenAI-compatible chat completions) ---------------------------------------

SYSTEM_PROMPT = (
    "You read what a visitor wrote to a company's chat or phone agent and fill a CRM record. "
    "Extract only facts the visitor stated about themselves; never guess or invent. "
    "Use null for anything not stated. Phone numbers as written, with the country code if the visitor gave one. "
    "Answer with a JSON object that matches the schema, and nothing else."
)


def llm_configured() -> bool:
    return bool(settings.CRM_LLM_BASE_URL)


def _custom_property(definition: CustomField) -> dict[str, Any]:
    T = CustomField.Type
    description = definition.label + (f": {definition.help_text}" if definition.help_text else "")
    bands = definition.usable_bands()
    if bands:
        ranges = "; ".join(f"{low}–{high} {label}" for low, high, label in bands)
        description += f" (bands: {ranges})"
    if definition.type == T.NUMBER or definition.type == T.DECIMAL:
        schema: dict[str, Any] = {"type": ["number", "null"]}
    elif definition.type == T.BOOLEAN:
        schema = {"type": ["boolean", "null"]}
    elif definition.type == T.SINGLE_CHOICE:
        schema = {"type": ["string", "null"], "enum": [str(c) for c in _choices(definition)] + [None]}
    elif definition.type == T.MULTIPLE_CHOICE:
        schema = {"type": ["array", "null"], "items": {"type": "string", "enum": [str(c) for c in _choices(definition)]}}
    else:
        schema = {"type": ["string", "null"]}
        if definition.type == T.DATE:
            description += " (YYYY-MM-DD)"
        elif definition.type == T.DATETIME:
            description += " (ISO 8601 date and time)"
    schema["description"] = description
    return schema


def build_llm_schema(definitions: Sequence[CustomField]) -> dict[str, Any]:
    """Return the JSON schema the LLM must answer with: the standard fields and the AI-allowed custom fields."""
    contact_props = {name: {"type": ["string", "null"]} for name in LLM_CONTACT_FIELDS}
    contact_props["birthday"]["description"] = "YYYY-MM-DD"
    contact_props["name"]["description"] = "The visitor's own full name as they gave it."
    properties: dict[str, Any] = {
        "contact": {
            "type": "object", "properties": contact_props, "required": list(LLM_CONTACT_FIELDS),
            "additionalProperties": False,
        }
    }
    if definitions:
        properties["custom"] = {
            "type": "object",
            "properties": {d.key: _custom_property(d) for d in definitions},
            "required": [d.key for d in definitions],
            "additionalProperties": False,
        }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


MAX_LLM_RESPONSE_BYTES = 2_000_000


def _post_within_deadline(url: str, payload: dict, headers: dict, timeout: float) -> tuple[int, bytes]:
    """POST and read the whole answer within ``timeout`` seconds in total, or raise ExtractorFailed(llm_timeout).

    ``requests``' own timeout bounds each socket read, not the call: a server sending a byte a second never
    trips it. The request runs in a worker thread that streams the body and stops at the deadline; the caller
    waits for it at most until the deadline, so a server that trickles its headers cannot hold the call either.
    """
    deadline = time.monotonic() + timeout
    outcome: dict[str, Any] = {}
    done = threading.Event()
    late = threading.Event()

    def fetch() -> None:
        try:
            with requests.post(url, json=payload, headers=headers, timeout=timeout, stream=True) as response:
                chunks, size = [], 0
                for chunk in response.iter_content(chunk_size=8192):
                    if late.is_set() or time.monotonic() >= deadline:
                        raise requests.Timeout("total deadline passed")
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_LLM_RESPONSE_BYTES:
                        outcome["error"] = ExtractorFailed("llm_bad_response", "The LLM's answer is too large.")
                        return
                outcome["answer"] = (response.status_code, b"".join(chunks))
        except requests.RequestException as exc:
            # A read that times out inside the body comes back from requests as a ConnectionError.
            timed_out = isinstance(exc, requests.Timeout) or "timed out" in str(exc) or time.monotonic() >= deadline
            if timed_out:
                outcome["error"] = ExtractorFailed("llm_timeout", f"The LLM did not answer within {timeout:g} s.")
            else:
                outcome["error"] = ExtractorFailed(
                    "llm_unreachable", f"Could not reach the LLM: {type(exc).__name__}."
                )
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which falls back to the rules
            outcome["error"] = ExtractorFailed("llm_unreachable", f"Could not reach the LLM: {type(exc).__name__}.")
        finally:
            done.set()

    worker = threading.Thread(target=fetch, name="crm-llm-call", daemon=True)
    worker.start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        late.set()  # the worker stops at its next chunk; nobody waits for it
        raise ExtractorFailed("llm_timeout", f"The LLM did not answer within {timeout:g} s.")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _call_llm(texts: Sequence[str], definitions: Sequence[CustomField]) -> dict[str, Any]:
    url = settings.CRM_LLM_BASE_URL.rstrip("/") + "/chat/completions"
    timeout = settings.CRM_LLM_TIMEOUT_SECONDS
    headers = {"Content-Type": "application/json"}
    if settings.CRM_LLM_API_KEY:
        headers["Authorization"] = f"Bearer {settings.CRM_LLM_API_KEY}"
    transcript = "\n".join(f"Visitor: {t}" for t in texts)
    payload = {
        "model": settings.CRM_LLM_MODEL or "default",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": transcript},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "crm_contact", "strict": True, "schema": build_llm_schema(definitions)},
        },
    }
    status_code, body = _post_within_deadline(url, payload, headers, float(timeout))
    if status_code != 200:
        raise ExtractorFailed("llm_http_error", f"The LLM answered HTTP {status_code}.")
    try:
        message = json.loads(body)["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ExtractorFailed("llm_bad_response", "The LLM's answer is not a chat-completions response.") from None
    if isinstance(message, dict) and message.get("refusal"):
        raise ExtractorFailed("llm_refused", f"The LLM refused: {str(message['refusal'])[:200]}")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ExtractorFailed("llm_bad_response", "The LLM's answer has no text content.")
    text = content.strip()
    # Some servers wrap JSON in a Markdown fence even when asked for a schema.
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ExtractorFailed("llm_invalid_json", f"The LLM's reply is not JSON: {content[:120]!r}") from None
    if not isinstance(data, dict):
        raise ExtractorFailed("llm_invalid_json", "The LLM's reply is JSON but not an object.")
    return data


def extract_with_llm(texts: Iterable[str], *, definitions: Sequence[CustomField] | None = None) -> Extraction:
    """Ask the configured chat-completions endpoint to fill the schema; raise ExtractorFailed if it cannot."""
    texts = [t for t in texts if t]
    definitions = list(ai_custom_fields() if definitions is None else definitions)
    data = _call_llm(texts, definitions)
    result = Extraction(extractor=LLM)
    contact = data.get("contact")
    custom = data.get("custom")
    for name, value in (("contact", contact), ("custom", custom)):
        if value is not None and not isinstance(value, dict):
            # JSON of the wrong shape is no answer either: the rules extractor reads the transcript instead.
            raise ExtractorFailed("llm_invalid_json", f"The LLM's reply does not match the schema: {name!r} is not an object.")
    flat: set[str] = set()
    if contact is None and any(k in LLM_CONTACT_FIELDS for k in data):
        # A server that ignores json_schema tends to answer the contact's fields at the top level:
        # read them as the contact rather than drop the transcript's phone and email.
        contact = {k: v for k, v in data.items() if k in LLM_CONTACT_FIELDS}
        flat = set(contact)
    if isinstance(contact, dict):
        result.contact = {k: v for k, v in contact.items() if not _nothing(v)}
    if isinstance(custom, dict):
        result.custom = {k: v for k, v in custom.items() if not _nothing(v)}
    for key in data:
        if key not in ("contact", "custom") and key not in flat:
            result.drop(key, data[key], "unknown_field: not part of the schema")
    return result


def _nothing(value: Any) -> bool:
    """A value the LLM gave for "not found": null, empty, or text that shows nothing (" ", "\n", a zero-width space)."""
    if isinstance(value, str):
        return is_blank(value)
    return value is None or value == []


def run_extractor(name: str, texts: Sequence[str]) -> Extraction:
    """Run the named extractor; if the LLM fails, record why and fall back to the rules so nothing is lost."""
    definitions = ai_custom_fields()
    if name == RULES:
        return extract_with_rules(texts, definitions=definitions)
    if not any(t.strip() for t in texts):
        # Nothing the visitor wrote: there is nothing to send, and no reason to spend a call.
        return Extraction(extractor=LLM)
    try:
        return extract_with_llm(texts, definitions=definitions)
    except ExtractorFailed as exc:
        logger.warning("LLM extraction failed (%s): %s", exc.code, exc.message)
        result = extract_with_rules(texts, definitions=definitions)
        result.extractor = LLM
        result.fallback = RULES
        result.error = {"code": exc.code, "message": exc.message}
        return result


# --- Validation: the same rules as an agent's write -------------------------------------------


def validate_found(extraction: Extraction, *, actor: Actor) -> Extraction:
    """Keep only values that pass agent-write validation; record every dropped one with the reason."""
    contact = {k: v for k, v in extraction.contact.items() if not _nothing(v)}
    custom = {k: v for k, v in extraction.custom.items() if not _nothing(v)}
    for key in [k for k in contact if k not in LLM_CONTACT_FIELDS]:
        extraction.drop(key, contact.pop(key), "unknown_field: extraction may not write this field")
    # Every agent path refuses NUL and lone surrogates (the conversation services' one check); a found
    # value holding either is dropped, never stored.
    for key in list(contact):
        if found := unstorable_text(contact[key]):
            extraction.drop(key, contact.pop(key), f"{found[1]}: the value holds text no database can store")
    for key in list(custom):
        if found := unstorable_text(key) or unstorable_text(custom[key]):
            extraction.drop(f"custom.{key}", custom.pop(key), f"{found[1]}: the value holds text no database can store")
    for key, value in list(contact.items()):
        # A number is read as text only where digits are the value (a phone, a ZIP code); as a name,
        # 123 is refused as an agent's write refuses it.
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (
            key in TEXT_ONLY_FIELDS and not isinstance(value, str)
        ):
            extraction.drop(key, contact.pop(key), "invalid_value: expected text")
        elif not isinstance(value, str):
            contact[key] = str(value)
    # Each round removes every field the validator named; values are checked independently,
    # so the second round passes. The bound only guards against a validator that names no field.
    for _round in range(3):
        try:
            clean_contact_input(contact, custom=custom or None, actor=actor, allow_owner=False)
            break
        except InputRejected as exc:
            removed = False
            for error in exc.errors:
                name = error.field or ""
                if name.startswith("custom.") and name[7:] in custom:
                    value = custom.pop(name[7:])
                elif name in contact:
                    value = contact.pop(name)
                else:
                    continue
                removed = True
                extraction.drop(name, value, f"{error.code}: {error.message}")
            if not removed:
                for key, value in [*contact.items(), *(("custom." + k, v) for k, v in custom.items())]:
                    extraction.drop(key, value, "invalid_value: " + str(exc))
                contact, custom = {}, {}
                break
    extraction.contact, extraction.custom = contact, custom
    return extraction
