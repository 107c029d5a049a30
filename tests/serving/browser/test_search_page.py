"""The search page in headless Chromium against a real uvicorn: what a person would do.

Each test leaves a screenshot of every step in its temp folder (pytest's ``tmp_path``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.serving.browser.conftest import MAX_UPLOAD_BYTES, Api

FIRST_IMAGE_LOADED = """() => {
  const image = document.querySelector('#grid .card img');
  return image !== null && image.complete && image.naturalWidth > 0;
}"""


def _cards(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#grid .card",
        """cards => cards.map(c => ({
            id: c.dataset.productId,
            price: c.dataset.price === undefined ? null : Number(c.dataset.price),
            title: c.querySelector('h3').textContent,
        }))""",
    )


def _wait_for_results(page: Any) -> None:
    page.wait_for_selector("#grid[aria-busy='false'] .card")


def test_a_photo_gives_the_category_and_cards_with_photos(
    page: Any, api: Api, shot: Callable[[str], Path]
) -> None:
    shot("1-empty")
    page.set_input_files(
        "#photo",
        files=[{"name": "listing.jpg", "mimeType": "image/jpeg", "buffer": api.registry.photo}],
    )
    page.wait_for_selector("#prediction:not([hidden]) #category:not(:empty)")
    _wait_for_results(page)
    page.wait_for_function(FIRST_IMAGE_LOADED)
    shot("2-photo-results")
    categories = set(api.registry.listings["root_category"])
    assert page.text_content("#category") in categories
    assert page.text_content("#query-kind") == "photo only"
    bars = page.locator("#bars li")
    assert 1 <= bars.count() <= 5
    model = page.text_content("#model") or ""
    assert api.registry.name in model and "version 1" in model and "@production" in model
    assert page.get_attribute("#preview", "src", timeout=1000)
    cards = _cards(page)
    assert cards and all(c["id"] in set(api.registry.listings["product_id"]) for c in cards)
    # Every card shows its title, price, location, category and score.
    first = page.locator("#grid .card").first
    for part in ("h3", ".price", ".location", ".category", ".score"):
        assert (first.locator(part).text_content() or "").strip(), part


def test_a_description_gives_results_from_the_keyboard(
    page: Any, shot: Callable[[str], Path]
) -> None:
    page.focus("#text")
    page.keyboard.type("office desk swivel chair")
    page.keyboard.press("Control+Enter")
    _wait_for_results(page)
    page.wait_for_selector("#category:not(:empty)")
    shot("1-text-results")
    assert page.text_content("#query-kind") == "text only"
    assert page.text_content("#category") == "Office Furniture & Equipment"
    assert page.get_attribute("#grid", "data-query") == "text"
    # The photo zone works from the keyboard too: Enter and Space open the file picker
    # (they click the file input; whether Chromium then shows a chooser depends on its
    # user-activation timing, which a loaded machine can stretch, so the click is checked).
    page.evaluate(
        "window.picks = 0; document.getElementById('photo')"
        ".addEventListener('click', () => { window.picks += 1; })"
    )
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.keyboard.press("Space")
    page.wait_for_function("window.picks === 2")


def test_a_price_filter_leaves_only_prices_in_range(page: Any, shot: Callable[[str], Path]) -> None:
    page.fill("#text", "things for sale")
    page.click("#search")
    _wait_for_results(page)
    before = _cards(page)
    assert any(c["price"] is None or not 50 <= c["price"] <= 150 for c in before)
    page.fill("#min-price", "50")
    page.fill("#max-price", "150")
    page.press("#max-price", "Enter")
    page.wait_for_selector("#status:has-text('(filtered)')")
    _wait_for_results(page)
    shot("1-price-filtered")
    after = _cards(page)
    assert after and all(c["price"] is not None and 50 <= c["price"] <= 150 for c in after)
    # An impossible range is said beside the filters (the API would answer no listings).
    page.fill("#min-price", "200")
    page.press("#min-price", "Enter")
    page.wait_for_selector("#filter-error:not([hidden])")
    shot("2-bad-range")
    assert "above max price" in (page.text_content("#filter-error") or "")


def test_more_like_this_replaces_the_grid(page: Any, shot: Callable[[str], Path]) -> None:
    page.fill("#text", "guitar vinyl records")
    page.click("#search")
    _wait_for_results(page)
    shot("1-query")
    before = _cards(page)
    chosen = before[1]
    page.locator("#grid .card").nth(1).get_by_role(
        "button", name=f"More like {chosen['title']}"
    ).click()
    page.wait_for_selector("#results-title:has-text('More like')")
    _wait_for_results(page)
    shot("2-more-like-this")
    after = _cards(page)
    assert chosen["title"] in (page.text_content("#results-title") or "")
    assert after and chosen["id"] not in {c["id"] for c in after}  # itself excluded
    assert [c["id"] for c in after] != [c["id"] for c in before]
    assert page.get_attribute("#grid", "data-query") == "product"
    assert page.evaluate("document.activeElement.id") == "results-title"
    page.click("#back")
    page.wait_for_selector("#results-title:text-is('Similar listings')")
    _wait_for_results(page)
    shot("3-back")


def test_a_non_image_and_a_huge_photo_show_readable_errors(
    page: Any, shot: Callable[[str], Path]
) -> None:
    page.set_input_files(
        "#photo",
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo\n" * 20}],
    )
    page.wait_for_selector("#error:not([hidden])")
    shot("1-not-an-image")
    message = page.text_content("#error") or ""
    assert "not a photo the API can read" in message and "JPEG, PNG or WebP" in message
    assert page.is_enabled("#search")  # the loading state ended

    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, "PNG")
    assert len(big.getvalue()) > MAX_UPLOAD_BYTES
    page.set_input_files(
        "#photo", files=[{"name": "big.png", "mimeType": "image/png", "buffer": big.getvalue()}]
    )
    page.wait_for_selector("#error:has-text('too large')")
    shot("2-too-large")


def test_phone_width_layout(page: Any, shot: Callable[[str], Path]) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.fill("#text", "bicycle tent golf clubs")
    page.click("#search")
    _wait_for_results(page)
    shot("1-phone")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    columns = page.evaluate(
        "getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 2
    query = page.locator(".query").bounding_box()
    results = page.locator(".results").bounding_box()
    assert query and results and results["y"] >= query["y"] + query["height"]  # stacked
