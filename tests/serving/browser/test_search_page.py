"""The search page in headless Chromium against a real uvicorn: what a person would do.

Each test leaves a screenshot of every step in its temp folder (pytest's ``tmp_path``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers.browser import CATALOGUE_TOKEN, MAX_UPLOAD_BYTES, Api

pytestmark = [pytest.mark.slow, pytest.mark.browser]

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


# -- the seller's flow, feedback and the model card ------------------------------------------


class FeedbackSeen:
    """``POST /feedback`` requests the page sent, with the answers the server gave."""

    def __init__(self, page: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, request: Any) -> None:
        if request.url.endswith("/feedback") and request.method == "POST":
            self.sent.append(json.loads(request.post_data or "null"))

    def _response(self, response: Any) -> None:
        if response.url.endswith("/feedback"):
            self.statuses.append(response.status)


def _feedback_counts(api: Api) -> dict[str, float]:
    """``marketplace_feedback_total`` on /metrics, by type (category, click)."""
    counts = {"category": 0.0, "click": 0.0}
    for line in httpx.get(f"{api.base}/metrics").text.splitlines():
        if line.startswith("marketplace_feedback_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('type="')[1].split('"')[0]] = float(value)
    return counts


def test_a_seller_publishes_and_sees_the_listing_with_its_similar_listings(
    page: Any, api: Api, shot: Callable[[str], Path]
) -> None:
    feedback = FeedbackSeen(page)
    before = _feedback_counts(api)
    with page.expect_response(lambda r: r.url.endswith("/predict")) as predicted:
        page.fill("#text", "Oak dining table with four chairs\nSolid wood, collection only")
        page.set_input_files(
            "#photo",
            files=[{"name": "table.jpg", "mimeType": "image/jpeg", "buffer": api.registry.photo}],
        )
    predict_id = predicted.value.headers["x-request-id"]
    page.wait_for_selector("#sell:not([hidden])")
    suggested = page.text_content("#category")
    assert page.input_value("#sell-category") == suggested
    assert page.input_value("#sell-name") == "Oak dining table with four chairs"
    assert page.input_value("#sell-description") == "Solid wood, collection only"
    page.fill("#sell-location", "Leeds, West Yorkshire")
    page.fill("#price", "-5")
    page.fill("#token", "not-the-token")
    shot("1-ready-to-publish")

    # Refusals are said beside the form, and a refused token is asked for again.
    page.click("#publish")
    page.wait_for_selector("#sell-error:has-text('token was refused')")
    assert page.is_visible("#token") and page.is_enabled("#publish")
    page.fill("#token", CATALOGUE_TOKEN)
    page.click("#publish")
    page.wait_for_selector(
        "#sell-error:has-text('price: Input should be greater than or equal to 0')"
    )
    shot("2-refused")
    assert not feedback.sent  # nothing was published, so nothing was kept
    page.fill("#price", "120")

    with page.expect_request("**/feedback"):
        page.click("#publish")
    page.wait_for_selector("#published:not([hidden])")
    _wait_for_results(page)
    page.wait_for_function(
        "() => { const i = document.querySelector('#grid .card.own img');"
        " return i !== null && i.complete && i.naturalWidth > 0; }"
    )
    shot("3-published")
    product_id = page.get_attribute("#published", "data-product-id")
    assert page.get_attribute("#published", "data-status") == "201"
    stored = httpx.get(f"{api.base}/products/{product_id}").json()
    assert stored["title"] == "Oak dining table with four chairs" and stored["live"]
    assert stored["category"] == suggested and stored["price"] == 120
    assert stored["location"] == "Leeds, West Yorkshire" and stored["image_id"]
    # The listing leads its own similar listings (GET /products/{id}/similar).
    cards = _cards(page)
    assert cards[0]["id"] == product_id and len(cards) > 1
    assert product_id not in {c["id"] for c in cards[1:]}
    assert (page.text_content("#status") or "").startswith("your listing, then")
    assert "Your listing" in (page.text_content("#results-title") or "")
    # The token is kept for the tab: not asked for again.
    assert page.is_hidden("#token-row") and page.is_visible("#token-saved")

    # A change keeps the id (200); the category the seller chose is stored.
    other = next(c for c in api.registry.listings["root_category"].unique() if c != suggested)
    page.select_option("#sell-category", other)
    with (
        page.expect_request("**/feedback"),
        page.expect_response(lambda r: r.url.split("?")[0].endswith("/similar")) as listed,
    ):
        page.click("#publish")
    page.wait_for_selector("#published[data-status='200']")
    _wait_for_results(page)
    assert httpx.get(f"{api.base}/products/{product_id}").json()["category"] == other

    # "More like this" on a neighbour: feedback names the answer that listed it.
    neighbour = _cards(page)[1]
    with page.expect_request("**/feedback"):
        page.locator("#grid .card").nth(1).get_by_role("button").click()
    page.wait_for_selector("#results-title:has-text('More like')")
    _wait_for_results(page)
    assert feedback.sent == [
        {"request_id": predict_id, "category": suggested},
        {"request_id": predict_id, "category": other},
        {"request_id": listed.value.headers["x-request-id"], "clicked_product_id": neighbour["id"]},
    ]
    # Feedback that cannot be sent never stands in the way (it is logged to the console).
    page.route("**/feedback", lambda route: route.abort())
    clicked = _cards(page)[0]
    page.locator("#grid .card").first.get_by_role("button").click()
    page.wait_for_selector(f"#results-title:has-text('More like “{clicked['title']}”')")
    _wait_for_results(page)
    assert clicked["id"] not in {c["id"] for c in _cards(page)}
    page.unroute("**/feedback")
    # Searched for, the new listing is found like any other.
    page.click("#search")
    page.wait_for_selector("#results-title:text-is('Similar listings')")
    _wait_for_results(page)
    assert product_id in {c["id"] for c in _cards(page)}
    # All three were stored (204) and counted.
    for _ in range(50):  # the responses' events arrive while Playwright waits
        if len(feedback.statuses) == 3:
            break
        page.wait_for_timeout(100)
    assert feedback.statuses == [204, 204, 204]
    after = _feedback_counts(api)
    assert after == {"category": before["category"] + 2, "click": before["click"] + 1}


def test_the_model_card_is_shown_and_rendered_as_text(
    page: Any, api: Api, shot: Callable[[str], Path]
) -> None:
    page.click("#model-card-open")
    page.wait_for_selector("#model-card[open] #model-card-body h3")
    shot("1-model-card")
    assert page.text_content("#model-card-body h3") == f"{api.registry.name} version 1"
    headings = page.locator("#model-card-body h4").all_text_contents()
    assert "Test metrics per query kind" in headings and "Runs" in headings
    rows = page.locator("#model-card-body table tbody tr").all_text_contents()
    assert any("photo only" in row for row in rows)
    assert page.locator("#model-card-body table thead th").count() >= 7
    assert page.locator("#model-card-body li").count() >= 5
    page.click("#model-card-close")
    page.wait_for_selector("#model-card:not([open])", state="attached")
    # Untrusted Markdown becomes text: no element, attribute or script link from it.
    rendered = page.evaluate(
        """() => {
            const box = document.createElement('div');
            box.append(window.marketplacePage.renderMarkdown(
                '# <img src=x onerror="window.pwned = 1">\\n\\n' +
                '- [run](javascript:window.pwned=1) and [docs](https://example.org/a)\\n\\n' +
                '| a | <b>b</b> |\\n|---|---|\\n| `<script>` | **x** |'));
            return {html: box.innerHTML, text: box.textContent,
                    links: [...box.querySelectorAll('a')].map(a => a.href)};
        }"""
    )
    assert "<img" not in rendered["html"] and "<b>" not in rendered["html"]
    assert "<script>" in rendered["text"] and 'onerror="window.pwned = 1"' in rendered["text"]
    assert rendered["links"] == ["https://example.org/a"]
    assert page.evaluate("window.pwned === undefined")
