// marketplace search page: a photo and/or a description in; the predicted category and
// similar listings (with their photos) out. Plain JavaScript, no build step, no CDN: it
// talks only to this API. Every value from the API is inserted as text, never as HTML.
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
  };

  const state = {
    photo: null, // File
    previewUrl: null,
    mode: null, // "query" (your photo/text) or "product" (more like a listing)
    product: null, // {id, title} in "product" mode
    alias: null,
    seq: 0, // answers of an older request are dropped
    controller: null,
  };

  const gbp = new Intl.NumberFormat("en-GB", { style: "currency", currency: "GBP" });

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
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
    return body;
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
      }
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
      && api("/predict", { method: "POST", body: listingForm(predictExtra), signal: request.signal })
        .then((answer) => request.seq === state.seq && showPrediction(answer));
    const predict = PARALLEL ? callPredict() : similar.then(callPredict);
    settle(request, [similar, predict], el.error);
  }

  function similarQuery(request) {
    const extra = [["k", String(K_SIMILAR)], ...filterParams()];
    return api("/similar", { method: "POST", body: listingForm(extra), signal: request.signal })
      .then((answer) => request.seq === state.seq && showResults(answer, "Similar listings"));
  }

  // "More like this" for a listing of the catalogue: its stored vector, no encoder runs.
  function moreLikeThis(product) {
    state.mode = "product";
    state.product = product;
    const request = begin();
    const params = filterParams();
    params.set("k", String(K_SIMILAR));
    const path = `/products/${encodeURIComponent(product.id)}/similar?${params}`;
    const call = api(path, { signal: request.signal })
      .then((answer) => request.seq === state.seq && showResults(answer, `More like “${product.title}”`));
    settle(request, [call], el.filterError);
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
      moreLikeThis(state.product);
    } else if (state.mode === "query") {
      const request = begin();
      settle(request, [similarQuery(request)], el.filterError);
    }
  }

  // -- rendering ----------------------------------------------------------------------------

  function showPrediction(answer) {
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
  }

  function card(product) {
    const item = node("li", "card");
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
      node("p", "score", `similarity ${product.score.toFixed(3)}`),
    );
    const more = node("button", "more", "More like this");
    more.type = "button";
    more.setAttribute("aria-label", `More like ${product.title}`);
    more.addEventListener("click", () => moreLikeThis({ id: product.product_id, title: product.title }));
    body.append(more);
    item.append(photo, body);
    return item;
  }

  function showResults(answer, heading) {
    el.title.textContent = heading;
    el.back.hidden = state.mode !== "product" || (!state.photo && !el.text.value.trim());
    el.grid.replaceChildren(...answer.results.map(card));
    el.grid.dataset.query = answer.query;
    const filtered = filterParams().toString() ? " (filtered)" : "";
    el.status.textContent = answer.results.length
      ? `${answer.results.length} listings${filtered}, most similar first · index of ${answer.index.size} listings`
      : `No listing matches${filtered}: widen the filters.`;
    if (state.mode === "product") el.title.focus(); // keyboard users land on the new grid
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

  loadModel();
})();
