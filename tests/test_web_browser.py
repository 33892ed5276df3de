"""The readers' pages in Chromium: the subscribe flow end to end, without JavaScript, accessible."""

from __future__ import annotations

import pytest

from .test_web import confirm_links, digest, site, statuses, unsubscribe_link  # noqa: F401


@pytest.fixture
def page(browser):
    """A page with JavaScript off (the pages must not need it); console messages kept."""
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.console_messages = []
    pg.on("console", lambda m: pg.console_messages.append(m.text))
    yield pg
    context.close()


def test_subscribe_in_the_browser_confirm_by_email_and_receive_the_next_issue(site, small_issue, page) -> None:  # noqa: F811
    project, env, smtp, web = site
    page.goto(web.url + "/subscribe")
    assert page.title() == "Subscribe – The World Digest"
    page.get_by_label("Email address").fill("fatima@example.net")
    page.get_by_label("Name (optional)").fill("Fatima Zahra")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert "fatima@example.net" in page.get_by_role("status").inner_text()
    assert statuses(project, env)["fatima@example.net"] == "unconfirmed"

    (link,) = confirm_links(smtp, "fatima@example.net")
    page.goto(web.local(link))
    page.get_by_role("button", name="Yes, subscribe fatima@example.net").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    assert statuses(project, env)["fatima@example.net"] == "active"

    smtp.recorder.received.clear()
    assert digest(project, env, "send", "small", "--yes").returncode == 0
    assert "fatima@example.net" in smtp.recorder.by_recipient()
    assert not [m for m in page.console_messages if "Content Security Policy" in m]


def test_unsubscribe_and_undo_in_the_browser(site, page) -> None:  # noqa: F811
    project, env, smtp, web = site
    page.goto(web.url + unsubscribe_link("anna@example.com"))
    assert statuses(project, env)["anna@example.com"] == "active"  # showing the page changes nothing
    page.get_by_role("button", name="Unsubscribe anna@example.com").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    assert statuses(project, env)["anna@example.com"] == "unsubscribed"
    page.get_by_role("button", name="Subscribe again").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert len(confirm_links(smtp, "anna@example.com")) == 1
    assert statuses(project, env)["anna@example.com"] == "unsubscribed"  # until confirmed


def test_the_form_reports_a_bad_address_accessibly(site, page) -> None:  # noqa: F811
    _, _, _, web = site
    page.goto(web.url + "/subscribe")
    page.get_by_label("Email address").fill("not an address")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    assert alert.inner_text().startswith("That is not an email address")
    assert page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Email address").input_value() == "not an address"


def test_the_pages_have_no_accessibility_violations(site, browser) -> None:  # noqa: F811
    from axe_playwright_python.sync_playwright import Axe

    _, _, _, web = site
    context = browser.new_context(bypass_csp=True)  # axe injects its script
    pg = context.new_page()
    axe = Axe()
    try:
        for path in (
            "/subscribe",
            unsubscribe_link("anna@example.com"),
            "/unsubscribe",
            "/confirm?email=a@example.net&token=bad",
            "/nope",
        ):
            pg.goto(web.url + path)
            results = axe.run(pg)
            assert results.violations_count == 0, (path, results.generate_report())
        pg.goto(web.url + "/subscribe")
        radius = pg.eval_on_selector("button", "b => getComputedStyle(b).borderRadius")
        assert radius == "4px"  # the stylesheet applies
    finally:
        context.close()
