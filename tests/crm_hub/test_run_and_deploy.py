"""The README's promises: `make run` serves a working app with a worker; `check --deploy` is clean."""

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def clean_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "CACHE_URL", "DJANGO_"))}
    env.update({"CRM_VAR_DIR": str(tmp_path / "var"), **extra})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_deploy_reports_nothing_with_debug_off_and_real_secrets(tmp_path):
    env = clean_env(tmp_path, DEBUG="0", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="crm.example.com")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_settings_refuse_to_start_without_secret_key_when_debug_is_off(tmp_path):
    env = clean_env(tmp_path, DEBUG="0")
    env.pop("SECRET_KEY", None)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("region", ["UK", "XX"])
def test_settings_refuse_an_unknown_default_phone_region(tmp_path, region):
    env = clean_env(tmp_path, DEBUG="1", CRM_DEFAULT_PHONE_REGION=region)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "CRM_DEFAULT_PHONE_REGION must be an ISO 3166 country code phonenumbers knows" in result.stderr
    assert ("the United Kingdom is GB" in result.stderr) is (region == "UK")


def _own_session_with_ctrl_c():
    # A suite started in the background (nohup, a CI runner, `make test &`) inherits SIGINT ignored, and so
    # would make run: Python then installs no Ctrl-C handler and bash cannot trap it. A terminal gives
    # make run the default action, as this does.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_script_pid(session_id: int) -> int:
    # The script's own bash, not the `sh -c` make runs it from.
    found = subprocess.run(["pgrep", "-s", str(session_id), "-f", "^bash scripts/run-dev.sh"], capture_output=True, text=True)
    return int(found.stdout.split()[0])


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "kill", "hangup"])
def test_make_run_serves_admin_with_printed_login_and_a_worker_and_ctrl_c_or_kill_stops_both(tmp_path, stop):
    port = free_port()
    env = clean_env(tmp_path, PORT=str(port))
    proc = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_own_session_with_ctrl_c,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(output)
        url = re.search(r"running at\s+(http://\S+)", text).group(1)
        username, password = re.search(r"Logins:\s+(\S+) / (\S+)", text).groups()
        worker_pid = int(re.search(r"Celery worker \+ beat:\s+pid (\d+)", text).group(1))

        session = requests.Session()
        for _ in range(60):
            try:
                login_page = session.get(f"{url}admin/login/", timeout=5)
                if login_page.status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        admin = session.post(
            f"{url}admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
            headers={"Referer": f"{url}admin/login/"}, timeout=10,
        )
        assert admin.status_code == 200 and "Site administration" in admin.text, admin.text[:500]

        worker_log = tmp_path / "var" / "log" / "worker.log"
        for _ in range(60):
            if worker_log.exists() and " ready." in worker_log.read_text():
                break
            time.sleep(0.5)
        assert " ready." in worker_log.read_text(), worker_log.read_text()[-2000:]
        os.kill(worker_pid, 0)  # alive

        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        elif stop == "hangup":
            os.killpg(proc.pid, signal.SIGHUP)  # a closed terminal (Celery restarts itself on SIGHUP)
        else:
            # `kill <pid>` of the script alone: bash used to run its trap only once runserver exited (never).
            os.kill(_run_script_pid(proc.pid), signal.SIGTERM)
        proc.wait(timeout=90)
        for _ in range(60):
            try:
                os.kill(worker_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.kill(worker_pid, 0)
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)
        # Nothing of this run is left, under any pid (Celery answered SIGHUP by restarting as a new process).
        time.sleep(2)
        left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
        assert left == [], subprocess.run(["ps", "-o", "pid,ppid,args", "-p", ",".join(left)], capture_output=True, text=True).stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_a_django_log_line_is_printed_once(tmp_path):
    env = clean_env(tmp_path, DEBUG="1")
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('django.request').warning('Not Found: /once')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "crm_hub.settings"},
                            capture_output=True, text=True, timeout=60)
    assert result.stderr.count("Not Found: /once") == 1, result.stderr
