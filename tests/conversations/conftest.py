"""Fixtures for conversation tests: API clients per agent and a local chat-completions server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rest_framework.test import APIClient

ALL_SCOPES = ["contacts:read", "contacts:write", "notes:write", "tasks:write", "conversations:write"]


@pytest.fixture
def make_client(db):
    """Return a function that creates an agent with ``scopes`` and an API client holding its token."""
    from crm_hub.services import create_agent

    counter = {"n": 0}

    def make(scopes=ALL_SCOPES, name=None):
        counter["n"] += 1
        agent, token = create_agent(name=name or f"conv-bot-{counter['n']}", scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        client.agent = agent
        return client

    return make


@pytest.fixture
def api(make_client):
    return make_client()


class FakeLLM:
    """What the fake server answers next; records every request body it got."""

    def __init__(self):
        self.content: str | None = "{}"
        self.status = 200
        self.delay = 0.0
        self.trickle = 0.0  # seconds between bytes of the body: a server slower than any deadline
        self.requests: list[dict] = []
        self.release = threading.Event()

    def reply_json(self, data: dict) -> None:
        self.content = json.dumps(data)


@pytest.fixture
def fake_llm(settings):
    """A chat-completions server on 127.0.0.1 (ephemeral port); settings point the LLM extractor at it."""
    state = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if state.delay:
                # Waits on an event, not sleep, so teardown can release it at once.
                state.release.wait(state.delay)
            reply = {
                "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": state.content}}],
            }
            data = json.dumps(reply).encode()
            try:
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not state.trickle:
                    self.wfile.write(data)
                for byte in data if state.trickle else b"":
                    if state.release.wait(state.trickle):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    settings.CRM_LLM_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}/v1"
    settings.CRM_LLM_API_KEY = "test-key"
    settings.CRM_LLM_MODEL = "test-model"
    settings.CRM_LLM_TIMEOUT_SECONDS = 5
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
