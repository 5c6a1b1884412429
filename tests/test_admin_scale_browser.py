"""Two defects of the dashboard at scale, in Chromium on a real server: a room opened from a
full rooms table is brought into sight, and the Events tab filters by kind and still shows
a kick after thousands of broadcasts."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.admin_helpers import create_app, identity_from_query, manager_of
from tests.support import ThreadServer
from tests.test_admin_browser import logged_in_page, pytestmark
from tests.test_memory_budget import idle_clients
from tests.ws_helpers import on_server, wait_until

__all__ = ["pytestmark"]  # the fixture and the browser marks, shared

ROOMS = 60


async def test_a_room_opened_from_a_full_table_comes_into_view(browser: Browser) -> None:
    app = create_app(authenticate=identity_from_query)
    manager = manager_of(app)
    with ThreadServer(app) as server:
        async with idle_clients(f"{server.ws_url}/ws/room{{n:02d}}", ROOMS, False):
            async def all_rooms() -> bool:
                return len(manager.hub.rooms) >= ROOMS

            await wait_until(all_rooms, 30, what="the rooms")
            page = await logged_in_page(browser, server)
            await page.click("[data-tab=rooms]")
            first = page.locator('#room-table tr[data-room="room00"]')
            await expect(first).to_be_visible(timeout=10_000)
            await expect(page.locator("#room-table tbody tr")).to_have_count(50)
            assert await page.evaluate("document.body.scrollHeight > 2 * innerHeight")
            await first.click()
            await expect(page.locator("#room-detail-name")).to_have_text("room00")
            await expect(page.locator("#room-detail-name")).to_be_in_viewport()
            await expect(page.locator("#room-members tbody tr")).to_have_count(1)


async def test_the_events_tab_filters_by_kind_and_keeps_a_kick(browser: Browser) -> None:
    app = create_app(authenticate=identity_from_query)
    manager = manager_of(app)
    with ThreadServer(app) as server:
        async with idle_clients(f"{server.ws_url}/ws/lobby?user=bob", 2, False):
            async def two() -> bool:
                return len(manager.hub.connections) == 2

            await wait_until(two, what="the connections")
            page = await logged_in_page(browser, server)
            await page.click("[data-tab=events]")
            victim = next(iter(manager.hub.connections))
            assert await on_server(server, manager.kick(victim, reason="spam"))

            async def flood() -> None:
                for n in range(2500):
                    await manager.broadcast("lobby", n)

            await on_server(server, flood(), 60)
            rows = page.locator("#event-table tbody tr")
            await expect(rows.first).to_have_class("kind-broadcast", timeout=10_000)
            kick = page.locator("#event-table tbody tr.kind-kicked")
            await page.select_option("#event-kind", "kicked")
            await expect(kick).to_have_count(1, timeout=10_000)
            await expect(kick).to_contain_text(victim)
            await expect(kick).to_contain_text("spam")
            await expect(rows).to_have_count(1)
            await on_server(server, manager.broadcast("lobby", "more"))  # not shown
            assert await on_server(server, manager.kick(
                next(c for c in manager.hub.connections if c != victim), reason="again"))
            await expect(kick).to_have_count(2, timeout=10_000)
            await expect(rows).to_have_count(2)
            await page.select_option("#event-kind", "")
            await expect(rows.first).not_to_have_class("kind-kicked", timeout=10_000)
