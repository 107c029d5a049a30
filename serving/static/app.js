// marketplace search page: a photo and/or a description in; the predicted category and
// similar listings (with their photos) out. Plain JavaScript, no build step, no CDN: it
// talks only to this API. Every value from the API is inserted as text, never as HTML
// (the model card's Markdown too: it is rendered into elements, see renderMarkdown).
// A seller can publish the listing (PUT /products/{id}); the category kept or chosen and
// "More like this" clicks go back to the API as feedback (POST /feedback), never blocking.
"use strict";

(() => {
  const K_SIMILAR = 12; // cards per query
  const K_CATEGORIES = 5; // probability bars
  // "/?parallel": send /similar and /predict together (for servers with cores to spare).
  const PARALLEL = new URLSearchParams(location.search).has("parallel");
  const KINDS = { "image+text": "photo + text", image: "photo only", text: "text only", product: "a listing" };
  // What each status means for the person at the page; the API's own detail follows it.
  const MESSAGES = {
    400: "The request was malformed",
    413: "That photo is too large",
    415: "That file is not a photo the API can read",
    422: "The API could not use that input",
    503: "The model is not loaded yet; try again in a moment",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"), form: $("query-form"), drop: $("drop"), photo: $("photo"),
    preview: $("preview"), hint: $("drop-hint"), photoName: $("photo-name"),
    clearPhoto: $("clear-photo"), text: $("text"), price: $("price"), error: $("error"),
    search: $("search"), prediction: $("prediction"), category: $("category"),
    kind: $("query-kind"), bars: $("bars"), back: $("back"), title: $("results-title"),
    filters: $("filters"), filterCategory: $("filter-category"), minPrice: $("min-price"),
    maxPrice: $("max-price"), filterError: $("filter-error"), status: $("status"), grid: $("grid"),
    cardOpen: $("model-card-open"), card: $("model-card"), cardClose: $("model-card-close"),
    cardBody: $("model-card-body"), sell: $("sell"), sellForm: $("sell-form"),
    sellName: $("sell-name"), sellDescription: $("sell-description"),
    sellLocation: $("sell-location"), sellCategory: $("sell-category"),
    sellSuggested: $("sell-suggested"), tokenRow: $("token-row"), token: $("token"),
    tokenSaved: $("token-saved"), forgetToken: $("forget-token"), sellError: $("sell-error"),
    publish: $("publish"), published: $("published"),
  };
  const TOKEN_KEY = "marketplace.catalogueToken"; // sessionStorage: this tab only

  const state = {
    photo: null, // File
    previewUrl: null,
    mode: null, // "query" (your photo/text) or "product" (more like a listing)
    product: null, // {id, title} in "product" mode
    alias: null,
    seq: 0, // answers of an older request are dropped
    controller: null,
    suggestion: null, // {requestId, category}: the /predict answer that suggested the category
    editingId: null, // the published listing's id: publishing again changes it
    own: null, // the record PUT answered: shown first in its own similar listings
  };

  const gbp = new Intl.NumberFormat("en-GB", { style: "currency", currency: "GBP" });

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // The body and the X-Request-ID of an answer (feedback refers to it).
  async function call(path, options = {}) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, `cannot reach the API (${err.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON (a proxy's error page): the status says enough
    }
    if (!response.ok) {
      const detail = body && body.detail !== undefined ? body.detail : response.statusText;
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return { body, requestId: response.headers.get("X-Request-ID"), status: response.status };
  }

  const api = (path, options) => call(path, options).then((answer) => answer.body);

  // Feedback is best effort: a missing /feedback or a refusal is logged, never shown.
  function sendFeedback(feedback) {
    if (!feedback.request_id) return;
    fetch("/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(feedback),
      keepalive: true, // survives the page being left right after a click
    }).then((response) => {
      if (!response.ok) console.warn(`feedback not stored: ${response.status}`, feedback);
    }).catch((err) => console.warn("feedback not sent", err, feedback));
  }

  function readable(err) {
    const lead = MESSAGES[err.status] || (err.status ? `The API answered ${err.status}` : "Network error");
    return err.message ? `${lead}: ${err.message}` : lead;
  }

  function showError(target, message) {
    target.textContent = message;
    target.hidden = false;
  }

  function clearErrors() {
    el.error.hidden = true;
    el.filterError.hidden = true;
    el.sellError.hidden = true;
  }

  function node(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  // -- the model being served -------------------------------------------------------------

  function showModel(name, version) {
    el.model.replaceChildren(
      "model ", node("b", "", name), " · version ", node("b", "", String(version)),
      state.alias ? " · alias " : "", state.alias ? node("b", "", `@${state.alias}`) : "",
    );
    el.model.dataset.version = String(version);
  }

  async function loadModel() {
    try {
      const info = await api("/model");
      state.alias = info.alias;
      showModel(info.name, info.version);
      for (const category of info.categories) {
        const option = node("option", "", category);
        option.value = category;
        el.filterCategory.append(option);
        el.sellCategory.append(option.cloneNode(true));
      }
      el.cardBody.replaceChildren(info.description
        ? renderMarkdown(info.description)
        : node("p", "", `Version ${info.version} has no model card in the registry.`));
      el.cardOpen.hidden = false;
    } catch (err) {
      el.model.textContent = readable(err);
    }
  }

  // -- the photo: choose, drop or paste -----------------------------------------------------

  function setPhoto(file) {
    if (!file) return;
    state.photo = file;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    el.preview.src = state.previewUrl;
    el.preview.hidden = false;
    el.hint.hidden = true;
    el.photoName.textContent = file.name || "pasted photo";
    el.clearPhoto.hidden = false;
    runQuery();
  }

  function clearPhoto() {
    state.photo = null;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    el.preview.hidden = true;
    el.preview.removeAttribute("src");
    el.hint.hidden = false;
    el.photoName.textContent = "";
    el.clearPhoto.hidden = true;
    el.drop.focus();
  }

  el.preview.addEventListener("error", () => {
    // Not decodable by the browser either: keep the file (the API says why), drop the preview.
    el.preview.hidden = true;
    el.hint.hidden = false;
  });
  el.drop.addEventListener("click", () => el.photo.click());
  el.drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      el.photo.click();
    }
  });
  el.photo.addEventListener("change", () => {
    setPhoto(el.photo.files[0]);
    el.photo.value = ""; // the same file can be chosen again
  });
  el.clearPhoto.addEventListener("click", clearPhoto);
  for (const type of ["dragenter", "dragover"]) {
    el.drop.addEventListener(type, (event) => {
      event.preventDefault();
      el.drop.classList.add("over");
    });
  }
  el.drop.addEventListener("dragleave", () => el.drop.classList.remove("over"));
  el.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    el.drop.classList.remove("over");
    setPhoto(event.dataTransfer.files[0]);
  });
  // A photo dropped beside the zone must not make the browser leave the page to open it.
  for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) =>
      f.type.startsWith("image/"));
    if (file) {
      event.preventDefault();
      setPhoto(file);
    }
  });

  // -- queries ------------------------------------------------------------------------------

  function filterParams() {
    const params = new URLSearchParams();
    if (el.filterCategory.value) params.set("category", el.filterCategory.value);
    if (el.minPrice.value.trim()) params.set("min_price", el.minPrice.value.trim());
    if (el.maxPrice.value.trim()) params.set("max_price", el.maxPrice.value.trim());
    return params;
  }

  function listingForm(extra) {
    const form = new FormData();
    if (state.photo) form.append("image", state.photo, state.photo.name || "photo");
    const text = el.text.value.trim();
    if (text) form.append("text", text);
    for (const [key, value] of extra) form.append(key, value);
    return form;
  }

  function begin() {
    if (state.controller) state.controller.abort();
    state.controller = new AbortController();
    state.seq += 1;
    clearErrors();
    el.grid.setAttribute("aria-busy", "true");
    el.search.disabled = true;
    el.search.replaceChildren(node("span", "spinner"), "Searching…");
    el.status.replaceChildren(node("span", "spinner"), "Searching…");
    return { seq: state.seq, signal: state.controller.signal, started: performance.now() };
  }

  function end(request) {
    if (request.seq !== state.seq) return;
    el.grid.setAttribute("aria-busy", "false");
    el.search.disabled = false;
    el.search.textContent = "Search";
    el.grid.dataset.queryMs = String(Math.round(performance.now() - request.started));
  }

  // Runs the calls concurrently, renders each answer as it arrives, shows the first error.
  async function settle(request, calls, errorTarget) {
    const outcomes = await Promise.allSettled(calls);
    if (request.seq !== state.seq) return;
    const failed = outcomes.find((o) => o.status === "rejected" && o.reason.name !== "AbortError");
    if (failed) {
      showError(errorTarget, readable(failed.reason));
      el.status.textContent = "No results: see the message beside the input.";
    }
    end(request);
  }

  // Your photo and/or description: the category and the similar listings, side by side.
  function runQuery() {
    const text = el.text.value.trim();
    if (!state.photo && !text) {
      clearErrors();
      showError(el.error, "Add a photo or type a description first.");
      el.text.focus();
      return;
    }
    state.mode = "query";
    state.product = null;
    const request = begin();
    const predictExtra = [["k", String(K_CATEGORIES)]];
    if (el.price.value.trim()) predictExtra.push(["price", el.price.value.trim()]);
    // One after the other by default, the grid first: both calls run the encoders on the
    // same photo and text, and on two cores two concurrent passes take as long as both in
    // a row, so nothing showed before both were done. In a row, the cards (and then their
    // photos) come after one pass while the category is computed (BENCHMARKS.md, "The
    // search page"). A failed /similar skips /predict: it would fail the same way.
    const similar = similarQuery(request);
    const callPredict = () => request.seq === state.seq
      && call("/predict", { method: "POST", body: listingForm(predictExtra), signal: request.signal })
        .then(({ body, requestId }) => request.seq === state.seq && showPrediction(body, requestId));
    const predict = PARALLEL ? callPredict() : similar.then(callPredict);
    settle(request, [similar, predict], el.error);
  }

  function similarQuery(request) {
    const extra = [["k", String(K_SIMILAR)], ...filterParams()];
    return call("/similar", { method: "POST", body: listingForm(extra), signal: request.signal })
      .then(({ body, requestId }) => request.seq === state.seq
        && showResults(body, "Similar listings", requestId));
  }

  // "More like this" for a listing of the catalogue: its stored vector, no encoder runs.
  // With `own` (the seller's just published listing), the listing itself leads the grid.
  function moreLikeThis(product, own = null) {
    state.mode = "product";
    state.product = product;
    state.own = own;
    const request = begin();
    const params = filterParams();
    params.set("k", String(K_SIMILAR));
    const path = `/products/${encodeURIComponent(product.id)}/similar?${params}`;
    const heading = own ? `Your listing “${product.title}” and similar listings`
      : `More like “${product.title}”`;
    const similar = call(path, { signal: request.signal })
      .then(({ body, requestId }) => request.seq === state.seq
        && showResults(body, heading, requestId));
    settle(request, [similar], own ? el.sellError : el.filterError);
  }

  // Filters re-query whatever the grid shows now.
  function refilter() {
    const low = parseFloat(el.minPrice.value), high = parseFloat(el.maxPrice.value);
    if (low > high) {  // the API answers an empty range with no listings; say why instead
      clearErrors();
      showError(el.filterError, `min price ${low} is above max price ${high}: no listing can match`);
      return;
    }
    if (state.mode === "product") {
      moreLikeThis(state.product, state.own);
    } else if (state.mode === "query") {
      const request = begin();
      settle(request, [similarQuery(request)], el.filterError);
    }
  }

  // -- rendering ----------------------------------------------------------------------------

  function showPrediction(answer, requestId) {
    el.category.textContent = answer.category;
    el.kind.textContent = KINDS[answer.query] || answer.query;
    el.kind.dataset.kind = answer.query;
    el.bars.replaceChildren(...answer.top_k.map(({ category, probability }) => {
      const item = node("li");
      const pct = `${(probability * 100).toFixed(1)}%`;
      const track = node("span", "track");
      const fill = node("span", "fill");
      fill.style.width = `${Math.max(0, Math.min(100, probability * 100))}%`;
      track.append(fill);
      item.append(node("span", "name", category), node("span", "pct", pct), track);
      item.setAttribute("aria-label", `${category}: ${pct}`);
      return item;
    }));
    el.prediction.hidden = false;
    if (answer.model) showModel(answer.model.name, answer.model.version);
    suggest(answer.category, requestId);
  }

  // A card of the grid; `requestId`: the answer that listed it (for the click's feedback).
  function card(product, requestId) {
    const own = product.score === undefined; // the seller's listing (a PUT's record)
    const item = node("li", own ? "card own" : "card");
    item.dataset.productId = product.product_id;
    if (product.price !== null) item.dataset.price = String(product.price);
    const photo = node("div", "photo");
    if (product.image_id) {
      const image = document.createElement("img");
      image.src = `/products/${encodeURIComponent(product.product_id)}/image`;
      image.alt = product.title;
      image.loading = "lazy";
      image.decoding = "async";
      image.width = 160;
      image.height = 160;
      image.addEventListener("error", () => photo.replaceChildren("no photo"));
      photo.append(image);
    } else {
      photo.textContent = "no photo";
    }
    const body = node("div", "body");
    const title = node("h3", "title", product.title);
    title.title = product.title;
    body.append(
      title,
      node("p", "price", product.price === null ? "no price" : gbp.format(product.price)),
      node("p", "meta location", product.location || "location unknown"),
      node("p", "meta category", product.category),
      own ? node("p", "score yours", "your listing · live")
        : node("p", "score", `similarity ${product.score.toFixed(3)}`),
    );
    if (!own) {
      const more = node("button", "more", "More like this");
      more.type = "button";
      more.setAttribute("aria-label", `More like ${product.title}`);
      more.addEventListener("click", () => {
        sendFeedback({ request_id: requestId, clicked_product_id: product.product_id });
        moreLikeThis({ id: product.product_id, title: product.title });
      });
      body.append(more);
    }
    item.append(photo, body);
    return item;
  }

  function showResults(answer, heading, requestId) {
    el.title.textContent = heading;
    el.back.hidden = state.mode !== "product" || (!state.photo && !el.text.value.trim());
    const cards = answer.results.map((product) => card(product, requestId));
    if (state.mode === "product" && state.own) cards.unshift(card(state.own));
    el.grid.replaceChildren(...cards);
    el.grid.dataset.query = answer.query;
    const filtered = filterParams().toString() ? " (filtered)" : "";
    const yours = state.mode === "product" && state.own ? "your listing, then " : "";
    el.status.textContent = answer.results.length
      ? `${yours}${answer.results.length} listings${filtered}, most similar first · index of ${answer.index.size} listings`
      : `${yours ? "Your listing; no other " : "No "}listing matches${filtered}: widen the filters.`;
    if (state.mode === "product") el.title.focus(); // keyboard users land on the new grid
  }

  // -- selling: the suggested category, publish, feedback ----------------------------------

  // Title and description follow the query's text until the seller edits them.
  function prefill(input, value) {
    if (!input.value || input.value === input.dataset.auto) {
      input.value = value;
      input.dataset.auto = value;
    }
  }

  function suggest(category, requestId) {
    state.suggestion = { requestId, category };
    if (!el.sellCategory.dataset.chosen) el.sellCategory.value = category;
    el.sellSuggested.textContent = `(suggested: ${category})`;
    const [first, ...rest] = el.text.value.trim().split("\n");
    prefill(el.sellName, first.trim());
    prefill(el.sellDescription, rest.join("\n").trim());
    showToken();
    el.sell.hidden = false;
  }

  function savedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: the token is typed for each publish
    }
  }

  function keepToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled
    }
    showToken();
  }

  function showToken() {
    const saved = Boolean(savedToken());
    el.tokenRow.hidden = saved;
    el.tokenSaved.hidden = !saved;
  }

  // A product id for a new listing: random, in the API's id alphabet. randomUUID needs a
  // secure context (https or localhost); getRandomValues does not.
  function newProductId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  const PUBLISH_MESSAGES = {
    401: "The catalogue token was refused; type it again",
    403: "Publishing is turned off on this server",
  };

  async function publish() {
    clearErrors();
    const title = el.sellName.value.trim();
    const token = savedToken() || el.token.value.trim();
    if (!title) {
      showError(el.sellError, "Give the listing a title.");
      el.sellName.focus();
      return;
    }
    if (!token) {
      showError(el.sellError, "Type the catalogue token to publish.");
      el.token.focus();
      return;
    }
    const form = new FormData();
    form.append("title", title);
    const fields = [["description", el.sellDescription], ["price", el.price],
      ["location", el.sellLocation], ["category", el.sellCategory]];
    for (const [name, input] of fields) {
      if (input.value.trim()) form.append(name, input.value.trim());
    }
    if (state.photo) form.append("image", state.photo, state.photo.name || "photo");
    const id = state.editingId || newProductId();
    el.publish.disabled = true;
    el.publish.replaceChildren(node("span", "spinner"), "Publishing…");
    try {
      const answer = await call(`/products/${encodeURIComponent(id)}`, {
        method: "PUT", body: form, headers: { Authorization: `Bearer ${token}` },
      });
      keepToken(token);
      el.token.value = "";
      const record = answer.body;
      const isNew = answer.status === 201;
      state.editingId = id;
      if (state.suggestion) {
        sendFeedback({ request_id: state.suggestion.requestId, category: record.category });
      }
      const another = node("button", "link", "sell another");
      another.type = "button";
      another.addEventListener("click", resetSell);
      el.published.replaceChildren(
        isNew ? "Published: " : "Changes saved: ", node("b", "", record.title),
        ` in ${record.category} · `, another,
      );
      el.published.dataset.productId = id;
      el.published.dataset.status = String(answer.status);
      el.published.hidden = false;
      moreLikeThis({ id, title: record.title }, record);
    } catch (err) {
      if (err.status === 401) keepToken(null);
      const lead = PUBLISH_MESSAGES[err.status];
      showError(el.sellError, lead ? `${lead}: ${err.message}` : readable(err));
    } finally {
      el.publish.disabled = false;
      el.publish.textContent = state.editingId ? "Save changes" : "Publish";
    }
  }

  // The next publish creates a new listing.
  function resetSell() {
    state.editingId = null;
    el.published.hidden = true;
    el.publish.textContent = "Publish";
    for (const input of [el.sellName, el.sellDescription, el.sellLocation]) {
      input.value = "";
      delete input.dataset.auto;
    }
    delete el.sellCategory.dataset.chosen;
    if (state.suggestion) el.sellCategory.value = state.suggestion.category;
    el.text.focus();
  }

  // -- the model card: Markdown rendered into elements, text only ---------------------------

  // Headings, paragraphs, lists, tables, code blocks; inline `code`, **bold** and http(s)
  // links. Every string goes in as a text node: the card cannot inject markup or script.
  function renderMarkdown(markdown) {
    const out = document.createDocumentFragment();
    const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
    let paragraph = [], list = null, table = null, code = null;
    const flush = () => {
      if (paragraph.length) out.append(inline(node("p"), paragraph.join(" ")));
      paragraph = [];
      list = null;
      table = null;
    };
    const cells = (line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
    for (const line of lines) {
      if (code) {
        if (/^\s*```/.test(line)) code = null;
        else code.textContent += `${line}\n`;
        continue;
      }
      let match;
      if (/^\s*```/.test(line)) {
        flush();
        code = node("code");
        const pre = node("pre");
        pre.append(code);
        out.append(pre);
      } else if (!line.trim()) {
        flush();
      } else if ((match = /^(#{1,6})\s+(.*)$/.exec(line))) {
        flush();
        out.append(inline(node(`h${Math.min(6, match[1].length + 2)}`), match[2]));
      } else if ((match = /^\s*(?:([-*+])|\d+[.)])\s+(.*)$/.exec(line))) {
        const tag = match[1] ? "ul" : "ol";
        if (paragraph.length || table) flush();
        if (!list || list.tagName.toLowerCase() !== tag) {
          list = node(tag);
          out.append(list);
        }
        list.append(inline(node("li"), match[2]));
      } else if (/^\s*\|/.test(line)) {
        if (paragraph.length || list) flush();
        if (!table) {
          table = node("table");
          table.append(node("thead"), node("tbody"));
          const wrap = node("div", "table-wrap"); // wide tables scroll, the page does not
          wrap.append(table);
          out.append(wrap);
        }
        const row = cells(line);
        if (row.every((c) => /^:?-+:?$/.test(c))) continue; // the header's rule
        const header = !table.tHead.rows.length;
        const tr = node("tr");
        for (const text of row) tr.append(inline(node(header ? "th" : "td"), text));
        (header ? table.tHead : table.tBodies[0]).append(tr);
      } else if (list && /^\s+\S/.test(line)) {
        list.lastChild.append(" ", inline(document.createDocumentFragment(), line.trim()));
      } else {
        if (list || table) flush();
        paragraph.push(line.trim());
      }
    }
    flush();
    return out;
  }

  function inline(target, text) {
    const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
    let last = 0, match;
    while ((match = pattern.exec(text))) {
      target.append(text.slice(last, match.index));
      if (match[1] !== undefined) {
        target.append(node("code", "", match[1]));
      } else if (match[2] !== undefined) {
        target.append(node("strong", "", match[2]));
      } else {
        let url = null;
        try {
          url = new URL(match[4], location.href);
        } catch {
          // not a URL: shown as text
        }
        if (url && (url.protocol === "http:" || url.protocol === "https:")) {
          const link = node("a", "", match[3]);
          link.href = url.href;
          link.target = "_blank";
          link.rel = "noopener noreferrer";
          target.append(link);
        } else {
          target.append(match[0]);
        }
      }
      last = pattern.lastIndex;
    }
    target.append(text.slice(last));
    return target;
  }

  // -- wiring -------------------------------------------------------------------------------

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    runQuery();
  });
  el.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      runQuery();
    }
  });
  el.filters.addEventListener("submit", (event) => {
    event.preventDefault();
    refilter();
  });
  el.filterCategory.addEventListener("change", refilter);
  el.minPrice.addEventListener("change", refilter);
  el.maxPrice.addEventListener("change", refilter);
  el.back.addEventListener("click", () => {
    el.back.hidden = true;
    runQuery();
  });
  el.title.tabIndex = -1; // focus moves to the heading when the grid is replaced
  el.sellForm.addEventListener("submit", (event) => {
    event.preventDefault();
    publish();
  });
  el.sellCategory.addEventListener("change", () => { el.sellCategory.dataset.chosen = "1"; });
  el.forgetToken.addEventListener("click", () => {
    keepToken(null);
    el.token.focus();
  });
  el.cardOpen.addEventListener("click", () => el.card.showModal());
  el.cardClose.addEventListener("click", () => el.card.close());
  el.card.addEventListener("click", (event) => {
    if (event.target === el.card) el.card.close(); // a click on the backdrop
  });
  // For tests and the curious: the card renderer (pure: a string in, elements out).
  window.marketplacePage = { renderMarkdown };

  loadModel();
})();
