"""Sign-in for a lab's dashboard: Streamlit's OpenID Connect (``st.login``, Authlib underneath).

Off by default. With ``[auth] enabled = true`` in the settings, :func:`require_sign_in`
(called by ``app.py`` before the navigation runs, so it covers every page and every
direct link) shows a sign-in page to a visitor who is not signed in, a clear refusal
to a signed-in user whose email is not allowed, and otherwise the user's name and a
sign-out button in the sidebar.

The identity provider is configured where Streamlit reads it, in ``secrets.toml``
(``[auth]`` with ``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret``,
``server_metadata_url``; or ``[auth.<name>]`` and ``[auth] provider = "<name>"`` in the
settings). Who may enter is in the settings: ``allowed_domains`` and ``allowed_emails``
(both empty: any account the provider signs in). An email the provider marks as not
verified (``email_verified = false``) is refused.
"""

from __future__ import annotations

import streamlit as st

from ui.errors import md_escape
from ui.settings import Settings, get_settings


def email_allowed(email: str, settings: Settings, verified: object = True) -> bool:
    email = email.strip().lower()
    if not email or "@" not in email or verified is False:
        return False
    if not settings.auth_allowed_domains and not settings.auth_allowed_emails:
        return True
    domain = email.rsplit("@", 1)[1]
    return email in settings.auth_allowed_emails or domain in settings.auth_allowed_domains


def _sign_in() -> None:
    provider = get_settings().auth_provider
    st.login(provider) if provider else st.login()


def require_sign_in(settings: Settings | None = None) -> None:
    """Stop the script run unless sign-in is off, or the visitor is signed in with an allowed email."""
    settings = settings or get_settings()
    if not settings.auth_enabled:
        return
    user = st.user
    if not user.is_logged_in:
        st.title("Circuit Explorer")
        st.info("This dashboard is for signed-in members of the lab. Sign in to continue.", icon=":material/lock:")
        st.button("Sign in", key="auth_sign_in", on_click=_sign_in, type="primary")
        st.stop()
    email = str(user.get("email") or "")
    if not email_allowed(email, settings, user.get("email_verified", True)):
        who = f"as {email}" if email else "with an account that has no email address"
        st.title("Circuit Explorer")
        st.error(md_escape(f"You are signed in {who}, which may not use this dashboard. "
                           "Sign out and sign in with an allowed account, or ask the lab to add yours."),
                 icon=":material/block:")
        st.button("Sign out", key="auth_sign_out_refused", on_click=st.logout)
        st.stop()
    name = str(user.get("name") or email)
    st.sidebar.markdown(f"Signed in as **{md_escape(name)}**")
    st.sidebar.button("Sign out", key="auth_sign_out", on_click=st.logout)
