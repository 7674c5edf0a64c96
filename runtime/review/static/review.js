// sftc review: keyboard-first scoring of a run's eval answers.
// Served as a file (the page's Content-Security-Policy runs no inline script). Every
// text from the run is put on the page by the server's escaping template or here with
// textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const pageReviewer = body.dataset.reviewer || "";
  const fixedReviewer = body.dataset.fixedReviewer === "yes";
  const nameInput = document.getElementById("reviewer");
  const message = document.getElementById("message");
  const rows = Array.from(document.querySelectorAll("section.row"));
  const header = document.querySelector("body > header");

  // ------------------------------------------------------------ layout
  // The sticky header's height, kept in --header-h: the page's scroll-padding-top, so a row
  // moved to (j/k, Tab, Enter) is scrolled to below the header, never under it.
  function trackHeader() {
    document.documentElement.style.setProperty("--header-h", header.getBoundingClientRect().height + "px");
  }
  trackHeader();
  if (window.ResizeObserver) new ResizeObserver(trackHeader).observe(header);

  // A long text is shown in a box of capped height with its own scroll bar; say so under it.
  document.querySelectorAll("section.row pre").forEach(function (pre) {
    if (pre.scrollHeight <= pre.clientHeight + 1) return;
    const more = document.createElement("p");
    more.className = "more";
    more.textContent = "long text: scroll inside the box to read all of it";
    pre.after(more);
  });

  function showMessage(text, kind) {
    message.textContent = text;
    message.dataset.kind = kind || "error";
    message.hidden = !text;
  }

  // Characters a name must not hold (the server refuses them too): controls, format
  // characters (zero-width, direction marks), lone surrogates, separators other than a space.
  const NAMES = {
    0x00: "NULL", 0xA0: "NO-BREAK SPACE", 0xAD: "SOFT HYPHEN", 0x200B: "ZERO WIDTH SPACE",
    0x200C: "ZERO WIDTH NON-JOINER", 0x200D: "ZERO WIDTH JOINER", 0x200E: "LEFT-TO-RIGHT MARK",
    0x200F: "RIGHT-TO-LEFT MARK", 0x202A: "LEFT-TO-RIGHT EMBEDDING", 0x202B: "RIGHT-TO-LEFT EMBEDDING",
    0x202C: "POP DIRECTIONAL FORMATTING", 0x202D: "LEFT-TO-RIGHT OVERRIDE", 0x202E: "RIGHT-TO-LEFT OVERRIDE",
    0x2060: "WORD JOINER", 0x2066: "LEFT-TO-RIGHT ISOLATE", 0x2067: "RIGHT-TO-LEFT ISOLATE",
    0x2068: "FIRST STRONG ISOLATE", 0x2069: "POP DIRECTIONAL ISOLATE", 0xFEFF: "ZERO WIDTH NO-BREAK SPACE",
  };
  function oddCharacter(text) {
    const found = /[\p{C}\p{Z}]/u.exec(text.replace(/ /g, "a"));
    if (!found) return null;
    const code = found[0].codePointAt(0);
    const hex = code.toString(16).toUpperCase().padStart(4, "0");
    const what = "U+" + hex + (NAMES[code] ? " " + NAMES[code] : (code >= 0xD800 && code <= 0xDFFF ?
      " LONE SURROGATE (half of a character)" : ""));
    return { what: what, at: Array.from(text.slice(0, found.index)).length + 1 };
  }

  function setCookie(name) {
    document.cookie = "sftc_reviewer=" + encodeURIComponent(name) + "; path=/; SameSite=Strict; max-age=31536000";
  }

  function cookieReviewer() {
    const m = document.cookie.match(/(?:^|;\s*)sftc_reviewer=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  // ------------------------------------------------------------ reviewer name
  if (!fixedReviewer) {
    const stored = window.localStorage.getItem("sftc_reviewer") || "";
    if (!pageReviewer && stored && cookieReviewer() !== stored) {
      setCookie(stored);
      window.location.reload();
      return;
    }
    document.getElementById("who").addEventListener("submit", function (e) {
      e.preventDefault();
      const odd = oddCharacter(nameInput.value);
      if (odd) {  // invisible in the field, and the server would refuse it: say which one
        showMessage("Your name was not taken: it holds an invisible or non-printable character, " + odd.what +
                    ", at character " + odd.at + ": type the name again without it.");
        nameInput.focus();
        return;
      }
      const name = nameInput.value.trim();
      if (!name) {
        showMessage("Enter your name: judgements are saved under it.");
        nameInput.focus();
        return;
      }
      window.localStorage.setItem("sftc_reviewer", name);
      setCookie(name);
      window.location.reload();
    });
  } else {
    document.getElementById("who").addEventListener("submit", function (e) { e.preventDefault(); });
  }
  if (!pageReviewer) {
    // the server may have said why the stored name was not taken: keep that message
    if (message.hidden) showMessage("Enter your name at the top and press Enter: it is required to save.", "info");
    nameInput.focus();
  }

  // ------------------------------------------------------------ state of a row
  function rowOf(el) { return el.closest("section.row"); }
  function cards(row) { return Array.from(row.querySelectorAll("article.answer")); }

  function markDirty(row) {
    row.dataset.dirty = "yes";
    row.querySelector(".status").textContent = "unsaved changes";
  }

  function setScore(card, value) {
    card.dataset.score = value ? String(value) : "";
    card.querySelectorAll("button.score").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.value === card.dataset.score));
    });
    markDirty(rowOf(card));
  }

  function toggleFlag(card) {
    const on = card.dataset.flagged !== "yes";
    card.dataset.flagged = on ? "yes" : "no";
    card.querySelector("button.flag").setAttribute("aria-pressed", String(on));
    markDirty(rowOf(card));
  }

  function updateProgress(p) {
    document.getElementById("progress-mine").textContent = p.mine;
    const all = document.getElementById("progress-all");
    if (all && p.reviewed !== undefined) all.textContent = p.reviewed;
    p.sources.forEach(function (s) {
      document.querySelectorAll(".sources li").forEach(function (li) {
        if (li.dataset.source !== s.source) return;
        li.querySelector(".mine").textContent = s.mine;
        const a = li.querySelector(".all");
        if (a && s.reviewed !== undefined) a.textContent = s.reviewed;
      });
    });
  }

  async function save(row) {
    const status = row.querySelector(".status");
    if (!pageReviewer || nameInput.value.trim() !== pageReviewer) {
      const text = "Enter your name at the top and press Enter before saving.";
      showMessage(text);
      status.textContent = "not saved: " + text;
      return false;
    }
    const answers = {};
    cards(row).forEach(function (card) {
      answers[card.dataset.slot] = {
        score: card.dataset.score ? parseInt(card.dataset.score, 10) : null,
        flagged: card.dataset.flagged === "yes",
        note: card.querySelector("textarea.note").value,
        sha: card.dataset.sha,
      };
    });
    const payload = {
      row: row.dataset.row,
      reviewer: pageReviewer,
      answers: answers,
      correction: row.querySelector("textarea.correction").value,
    };
    status.textContent = "saving…";
    let response, data;
    try {
      response = await fetch("api/judgements", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify(payload),
      });
      data = await response.json().catch(function () { return { error: "HTTP " + response.status }; });
    } catch (err) {
      status.textContent = "not saved: the server did not answer";
      showMessage("Not saved: the server did not answer (" + err + ").");
      return false;
    }
    if (!response.ok) {
      const text = (data && data.error) || ("HTTP " + response.status);
      status.textContent = "not saved: " + text;
      showMessage("Not saved (" + row.dataset.row + "): " + text);
      return false;
    }
    row.dataset.dirty = "no";
    row.dataset.saved = "yes";
    status.textContent = data.saved ? "saved" : "saved (no change)";
    showMessage("");
    updateProgress(data.progress);
    return true;
  }

  // ------------------------------------------------------------ moving around
  function focusRow(index) {
    if (index < 0 || index >= rows.length) return;
    const row = rows[index];
    cards(row)[0].focus({ preventScroll: true });
    // a row not wholly in view is scrolled to the top, below the sticky header (scroll-padding-top)
    const box = row.getBoundingClientRect();
    if (box.top < header.getBoundingClientRect().bottom || box.bottom > window.innerHeight) {
      row.scrollIntoView({ block: "start" });
    }
  }

  function currentRowIndex(el) {
    const row = el && el.closest ? rowOf(el) : null;
    return row ? rows.indexOf(row) : -1;
  }

  async function saveAndNext(row) {
    const ok = row.dataset.dirty === "yes" ? await save(row) : true;
    if (ok) focusRow(rows.indexOf(row) + 1);
  }

  // ------------------------------------------------------------ mouse
  rows.forEach(function (row) {
    cards(row).forEach(function (card) {
      card.querySelectorAll("button.score").forEach(function (b) {
        b.addEventListener("click", function () {
          setScore(card, card.dataset.score === b.dataset.value ? "" : b.dataset.value);
        });
      });
      card.querySelector("button.flag").addEventListener("click", function () { toggleFlag(card); });
    });
    row.querySelectorAll("textarea").forEach(function (t) {
      t.addEventListener("input", function () { markDirty(row); });
    });
  });

  // ------------------------------------------------------------ keyboard
  document.addEventListener("keydown", function (e) {
    const target = e.target;
    const inField = target.matches && target.matches("textarea, input");
    const row = target.closest ? rowOf(target) : null;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      if (row) {
        e.preventDefault();
        saveAndNext(row);
      }
      return;
    }
    if (inField) {
      if (e.key === "Escape" && row) {
        e.preventDefault();
        const card = target.closest("article.answer") || cards(row)[0];
        card.focus();
      }
      return;
    }
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const card = target.closest ? target.closest("article.answer") : null;
    if (e.key === "j" || e.key === "k") {
      e.preventDefault();
      const i = currentRowIndex(target);
      focusRow(e.key === "j" ? i + 1 : (i < 0 ? 0 : i - 1));
      return;
    }
    if (!row) return;
    if (card && /^[0-5]$/.test(e.key)) {
      e.preventDefault();
      setScore(card, e.key === "0" ? "" : e.key);
    } else if (card && e.key === "f") {
      e.preventDefault();
      toggleFlag(card);
    } else if (card && e.key === "n") {
      e.preventDefault();
      card.querySelector("textarea.note").focus();
    } else if (e.key === "e") {
      e.preventDefault();
      row.querySelector("textarea.correction").focus();
    } else if (card && (e.key === "ArrowRight" || e.key === "ArrowLeft")) {
      e.preventDefault();
      const all = cards(row);
      const i = all.indexOf(card) + (e.key === "ArrowRight" ? 1 : -1);
      if (i >= 0 && i < all.length) all[i].focus();
    } else if (e.key === "Enter" && (card || target.matches("button"))) {
      if (target.matches("button")) return; // a button's own Enter clicks it
      e.preventDefault();
      saveAndNext(row);
    }
  });

  window.addEventListener("beforeunload", function (e) {
    if (rows.some(function (r) { return r.dataset.dirty === "yes"; })) {
      e.preventDefault();
    }
  });

  if (pageReviewer && rows.length) focusRow(0);
})();
