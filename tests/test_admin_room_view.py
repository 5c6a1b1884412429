"""The dashboard's room view (members and message rate of one room) in Chromium, on a real
server: it draws, follows the room as members leave, restarts for another room, and keeps
the console and the Content-Security-Policy clean. The screenshot is
``docs/admin_room_view.png``."""

from __future__ import annotations

from playwright.async_api import Browser, Page, expect

from tests.support import ThreadServer
from tests.test_admin_browser import OUTPUT, pytestmark
from tests.test_admin_charts import _login, server, traffic, watched_page

__all__ = ["pytestmark", "server"]  # the fixtures and the browser marks, shared

SCREENSHOT = OUTPUT / "admin_room_view.png"  # docs/admin_room_view.png is a copy of it


def legend_number(text: str | None) -> float:
    return float((text or "0").split()[-1].replace(",", ""))


async def open_room(page: Page, name: str) -> None:
    await page.locator(f'#room-table tr[data-room="{name}"]').click()
    await expect(page.locator("#chart-room-members")).to_have_attribute("data-room", name)


async def test_the_room_view_follows_one_room(browser: Browser, server: ThreadServer) -> None:
    context, page, problems = await watched_page(browser, height=1100)
    members = page.locator("#chart-room-members .key.s-total")
    rate = page.locator("#chart-room-rate .key.s-out")
    try:
        page = await _login(page, server)
        async with traffic(server) as sockets:  # dev: u0 (publishing ~40/s), u2, u4
            await page.click("[data-tab=rooms]")
            await expect(page.locator('#room-table tr[data-room="dev"]')).to_be_attached(
                timeout=10_000)
            await open_room(page, "dev")
            await expect(page.locator("#chart-room-members .chart-room")).to_have_text("dev")
            await expect(members).to_have_text("members 3", timeout=10_000)
            await expect(rate).not_to_have_text("msgs/s 0", timeout=10_000)
            first = await page.locator("#chart-room-rate polyline").get_attribute("points")
            await page.wait_for_timeout(2500)
            second = await page.locator("#chart-room-rate polyline").get_attribute("points")
            assert first != second, "the room's rate chart did not move"
            assert len((second or "").split()) >= len((first or "").split()) + 2
            shown = legend_number(await rate.text_content())
            assert 5 < shown < 200, f"dev's rate shown as {shown} msgs/s (published ~40/s)"

            await sockets[2].close()  # one member of dev leaves
            await expect(members).to_have_text("members 2", timeout=10_000)
            OUTPUT.mkdir(parents=True, exist_ok=True)
            await page.wait_for_timeout(3000)
            await page.locator("#room-detail").screenshot(path=str(SCREENSHOT))

            samples = int(await page.locator("#chart-room-members").get_attribute(
                "data-samples") or 0)
            assert samples >= 6
            await open_room(page, "lobby")  # another room: a new series
            await expect(members).to_have_text("members 3", timeout=10_000)
            restarted = int(await page.locator("#chart-room-members").get_attribute(
                "data-samples") or 0)
            assert restarted < samples, "the series did not restart for the other room"
            await expect(rate).to_have_text("msgs/s 0", timeout=10_000)  # nobody publishes
        assert SCREENSHOT.stat().st_size > 5_000
        csp = await page.evaluate("window.__csp")
        assert csp == [], f"CSP violations: {csp}"
        assert problems == [], problems
    finally:
        await context.close()
