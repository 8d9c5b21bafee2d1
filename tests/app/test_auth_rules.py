"""Who may enter when sign-in is on: allowed domains, allowed emails, verified addresses only."""

from __future__ import annotations

import dataclasses

from ui.auth import email_allowed
from ui.settings import load_settings


def settings(tmp_path, auth: str):
    path = tmp_path / "settings.toml"
    path.write_text(f"""
[models]
allowlist = ["default"]
[limits]
max_prompt_tokens = 64
max_concurrent_runs_per_device = 1
[auth]
enabled = true
{auth}
""")
    return load_settings(path)


def test_domains_and_emails_restrict_and_empty_lists_allow_any_account(tmp_path):
    s = settings(tmp_path, 'allowed_domains = ["Lab.example"]\nallowed_emails = ["@Guest@uni.example"]')
    assert s.auth_allowed_domains == ("lab.example",) and s.auth_allowed_emails == ("guest@uni.example",)
    assert email_allowed("ada@lab.example", s)
    assert email_allowed("ADA@LAB.EXAMPLE ", s)
    assert email_allowed("guest@uni.example", s)
    assert not email_allowed("other@uni.example", s)
    assert not email_allowed("ada@lab.example.evil.com", s)
    assert not email_allowed("ada@sub.lab.example", s)  # a domain means that domain, not its subdomains
    assert not email_allowed("", s) and not email_allowed("no-at-sign", s)
    assert not email_allowed("ada@lab.example", s, verified=False)
    anyone = dataclasses.replace(s, auth_allowed_domains=(), auth_allowed_emails=())
    assert email_allowed("someone@anywhere.example", anyone)


def test_sign_in_is_off_by_default(tmp_path):
    from ui.settings import DEFAULT_SETTINGS_PATH

    s = load_settings(DEFAULT_SETTINGS_PATH)
    assert not s.auth_enabled and s.cache_backend == "disk" and s.compute_backend == "local"
    assert s.runs_per_minute_per_session == 0 and s.runs_per_minute_per_address == 0
