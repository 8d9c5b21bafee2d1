"""Sign-in in a real browser against a local OpenID Connect provider (oidc-provider-mock) started here.

Signed out: the sign-in page, no app. Signed in with an allowed email: the app, the
user's name in the sidebar, and sign-out works. Another email: a clear refusal.
"""

from __future__ import annotations

import secrets

import pytest
from playwright.sync_api import expect

from app_server import AppServer
from app_settings import write_settings
from redis_server import free_port

pytestmark = pytest.mark.e2e

CHART = '[data-testid="stPlotlyChart"] .main-svg'
WAIT_MS = 90_000  # a fresh server's first script run imports torch: slow on a busy 2-core machine
ALLOWED = "ada@lab.example"
OTHER = "eve@elsewhere.example"


@pytest.fixture(scope="module")
def provider():
    oidc = pytest.importorskip("oidc_provider_mock")
    users = [oidc.User(sub=ALLOWED, claims={"email": ALLOWED, "name": "Ada Lovelace"}),
             oidc.User(sub=OTHER, claims={"email": OTHER, "name": "Eve"})]
    with oidc.run_server_in_thread(user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def signed_app(provider, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sign_in")
    port = free_port()
    (tmp / "secrets.toml").write_text(f"""
[auth]
redirect_uri = "http://localhost:{port}/oauth2callback"
cookie_secret = "{secrets.token_hex(16)}"
client_id = "circuit-explorer-test"
client_secret = "{secrets.token_hex(16)}"
server_metadata_url = "{provider}/.well-known/openid-configuration"
""", encoding="utf-8")
    write_settings(tmp / "settings.toml", tmp / "cache", auth='enabled = true\nallowed_domains = ["lab.example"]')
    app = AppServer(tmp / "settings.toml", tmp / "app.log", port=port,
                    extra_args=["--secrets.files", str(tmp / "secrets.toml")]).wait_healthy()
    yield f"http://localhost:{port}"
    app.stop()


def sign_in_as(page, app_url: str, email: str) -> None:
    page.goto(app_url)
    page.get_by_role("button", name="Sign in").click(timeout=WAIT_MS)
    page.get_by_role("button", name=email).click(timeout=WAIT_MS)  # the provider's one-click user
    page.wait_for_url(f"{app_url}/**")


def test_signed_out_visitor_sees_only_the_sign_in_page(signed_app, page):
    page.goto(f"{signed_app}/attention")  # a direct link to a page is guarded too
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("for signed-in members of the lab")).to_be_visible(timeout=WAIT_MS)
    assert page.locator(CHART).count() == 0
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0


def test_allowed_email_gets_the_app_with_name_and_sign_out(signed_app, page):
    sign_in_as(page, signed_app, ALLOWED)
    page.wait_for_selector(CHART)
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text("Ada Lovelace")).to_be_visible(timeout=WAIT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    sidebar.get_by_role("button", name="Sign out").click()
    # Streamlit ends the provider's session too (RP-initiated logout); the mock asks to confirm.
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(f"{signed_app}/**")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)
    page.goto(signed_app)  # signed out for good, not just on this screen
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)
    assert page.locator(CHART).count() == 0


def test_other_email_is_refused_clearly(signed_app, page):
    sign_in_as(page, signed_app, OTHER)
    refusal = page.get_by_text(f"You are signed in as {OTHER}, which may not use this dashboard")
    expect(refusal).to_be_visible(timeout=WAIT_MS)
    assert page.locator(CHART).count() == 0
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=WAIT_MS)
