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

  function showMessage(text, kind) {
    message.textContent = text;
    message.dataset.kind = kind || "error";
    message.hidden = !text;
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
    showMessage("Enter your name at the top and press Enter: it is required to save.", "info");
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
    const card = cards(rows[index])[0];
    card.focus();
    rows[index].scrollIntoView({ block: "nearest" });
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
