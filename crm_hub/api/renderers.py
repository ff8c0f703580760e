"""The agent API's JSON renderer: never a 500 for text that UTF-8 cannot encode."""

from __future__ import annotations

import json

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            # A lone surrogate that got into an answer (echoed input, an old stored value):
            # the JSON escape \uD800 can still carry it, where UTF-8 cannot.
            return json.dumps(
                data, cls=self.encoder_class, ensure_ascii=True, allow_nan=not self.strict, separators=(",", ":")
            ).encode("ascii")
