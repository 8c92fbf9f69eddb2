// Card on file: the page script. Plain ES module, no framework, no inline code.
// Every page works without it; with it the jobs page stays live over a
// websocket, prompts are answered in place, and the site list filters as you type.
// It never logs or stores what the cardholder types.

const KEY_NAME_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const CREDENTIAL_TYPES = new Set(["initial_account_link", "credential_request"]);
const TFA_TYPES = new Set(["tfa", "tfa_request", "otp"]);
const TFA_KEYS = new Set(["tfa", "otp"]);
const FINISHED = new Set(["success", "failed", "cancelled"]);
const RETRYABLE = new Set(["failed", "cancelled"]);
const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 30000;
// Longer than the portal's own deadline for CardSavr's answer to a reply.
const REPLY_TIMEOUT_MS = 60000;

// ---------------------------------------------------------------- helpers

function slot(root, name) {
  return root.querySelector(`[data-slot="${name}"]`);
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function announce(text, assertive = false) {
  const region = document.getElementById(
    assertive ? "announce-assertive" : "announce-polite",
  );
  if (!region) return;
  // Clearing first makes a repeated message be read again.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = text;
  }, 50);
}

function formatSeconds(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function jobUrl(url, id) {
  return url.replace(/\/jobs\/0\//, `/jobs/${id}/`);
}

// ------------------------------------------------------ reveal toggles

function initRevealToggles(root = document) {
  for (const button of root.querySelectorAll('[data-slot="reveal"]')) {
    button.hidden = false;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest('[data-slot="reveal"]');
  if (!button) return;
  const input = document.getElementById(button.getAttribute("aria-controls"));
  if (!input) return;
  const show = input.type === "password";
  input.type = show ? "text" : "password";
  button.setAttribute("aria-pressed", String(show));
  button.textContent = show ? "Hide" : "Show";
});

// ---------------------------------------------------- start page filter

function initSiteFilter() {
  const search = document.getElementById("site-search");
  const list = document.getElementById("site-list");
  const input = document.getElementById("q");
  if (!search || !list || !input) return;
  const count = document.getElementById("site-count");
  const none = document.getElementById("site-none");
  const sites = [...list.querySelectorAll("li.site[data-name]")];

  function apply() {
    const q = input.value.trim().toLowerCase();
    let shown = 0;
    for (const site of sites) {
      const chosen = site.querySelector('input[name="site"]')?.checked;
      const match =
        !q || site.dataset.name.includes(q) || site.dataset.host.includes(q);
      // A chosen site stays visible, so a choice is never hidden by a filter.
      site.hidden = !(match || chosen);
      if (!site.hidden) shown += 1;
    }
    if (none) none.hidden = shown > 0;
    if (count) {
      setText(
        count,
        `${shown} site${shown === 1 ? "" : "s"}${q ? ` match${shown === 1 ? "es" : ""} “${input.value.trim()}”` : ""}.`,
      );
    }
  }

  input.addEventListener("input", apply);
  // With the script the filter runs in place and keeps what is ticked.
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  list.addEventListener("change", (event) => {
    const box = event.target;
    if (box.name !== "site") return;
    const details = box.closest("li")?.querySelector("details");
    if (details && box.checked) details.open = true;
  });
}

// ------------------------------------------------------ the jobs page

class JobsPage {
  constructor(container) {
    this.container = container;
    this.texts = JSON.parse(
      document.getElementById("client-texts")?.textContent || "{}",
    );
    this.warningSeconds = this.texts.warning_seconds || 60;
    this.versions = new Map();
    this.deadlines = new Map(); // job id -> ms timestamp on this clock
    this.warned = new Set(); // envelope ids already warned about
    this.pendingReorder = false;
    this.socket = null;
    this.attempt = 0;
    this.connectedOnce = false;
    this.stopped = false;
    this.reconnectTimer = null;
    this.lastResync = 0;
    this.replySeq = 0;
    this.pendingReplies = new Map(); // ref -> {resolve, reject, timer}
    this.connection = document.getElementById("connection");

    this.readServerRender();
    container.addEventListener("focusout", (event) => {
      if (this.pendingReorder && !container.contains(event.relatedTarget)) {
        this.reorder();
      }
    });
    document.addEventListener("submit", (event) => this.onSubmit(event));
    window.setInterval(() => this.tick(), 1000);
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
    this.connect();
  }

  // What the server rendered, so countdowns run before the first snapshot.
  readServerRender() {
    const now = Date.now();
    for (const article of this.container.querySelectorAll("article.job")) {
      const id = Number(article.dataset.jobId);
      this.versions.set(id, Number(article.dataset.version));
      const prompt = article.querySelector(".prompt");
      if (prompt && prompt.dataset.secondsLeft !== "") {
        this.deadlines.set(id, now + Number(prompt.dataset.secondsLeft) * 1000);
      }
    }
  }

  // ------------------------------------------------------ connection

  setConnection(state, text) {
    if (!this.connection) return;
    this.connection.dataset.state = state;
    setText(this.connection.querySelector(".connection__text"), text);
  }

  connect() {
    if (this.stopped) return;
    window.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.setConnection(
      "connecting",
      this.connectedOnce ? "Reconnecting to live updates…" : "Connecting to live updates…",
    );
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const path = document.body.dataset.wsPath || "/ws/jobs/";
    let socket;
    try {
      socket = new WebSocket(`${scheme}://${window.location.host}${path}`);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.setConnection("live", "Live: this page updates by itself.");
      if (this.connectedOnce) this.resync(true);
      this.connectedOnce = true;
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.dropPendingReplies();
      if (event.code === 4401 || event.code === 4403) {
        this.stopped = true;
        this.setConnection(
          "offline",
          "Live updates stopped: you are logged out. Log in again to continue.",
        );
        return;
      }
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.stopped || this.reconnectTimer) return;
    // Exponential backoff with full jitter, so reconnecting pages spread out.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.random() * ceiling;
    this.attempt += 1;
    this.setConnection(
      "offline",
      `Live updates lost. Trying again in ${Math.max(1, Math.ceil(delay / 1000))} s… Your jobs keep running.`,
    );
    this.reconnectTimer = window.setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    this.attempt = 0;
    this.connect();
  }

  resync(force = false) {
    const now = Date.now();
    if (!force && now - this.lastResync < 2000) return;
    this.lastResync = now;
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "resync" }));
    }
  }

  // ------------------------------------------------------ messages

  onMessage(message) {
    if (!message || typeof message !== "object") return;
    if (message.type === "jobs.snapshot") {
      this.applySnapshot(message.jobs || []);
      this.applyUpstream(message.upstream);
    } else if (message.type === "job.updated" && message.job) {
      this.applyUpdate(message.job);
    } else if (message.type === "upstream.state") {
      this.applyUpstream(message.state);
    } else if (message.type === "reply.result") {
      this.settleReply(message);
    }
  }

  applyUpstream(state) {
    const banner = document.getElementById("upstream-banner");
    if (!banner || !state) return;
    banner.hidden = state.reachable !== false;
  }

  applySnapshot(jobs) {
    const seen = new Set();
    for (const job of jobs) {
      seen.add(job.id);
      this.render(job, false);
    }
    for (const article of [...this.container.querySelectorAll("article.job")]) {
      const id = Number(article.dataset.jobId);
      if (!seen.has(id)) {
        article.remove();
        this.versions.delete(id);
        this.deadlines.delete(id);
      }
    }
    this.reorder();
    this.updateSummary();
  }

  applyUpdate(job) {
    const known = this.versions.get(job.id);
    if (known !== undefined && job.version <= known) return; // stale or repeated
    if (known !== undefined && job.version > known + 1) {
      // Pushes were missed: render this one, then fetch the whole picture.
      this.resync();
    }
    this.render(job, true);
    this.reorder();
    this.updateSummary();
  }

  // ------------------------------------------------------ rendering

  render(job, live) {
    let article = document.getElementById(`job-${job.id}`);
    const isNew = !article;
    const before = article?.dataset.outcome;
    if (isNew) {
      article = this.cloneJob(job.id);
      this.container.append(article);
    }
    this.versions.set(job.id, job.version);
    if (job.seconds_left === null || job.seconds_left === undefined) {
      this.deadlines.delete(job.id);
    } else {
      this.deadlines.set(job.id, Date.now() + job.seconds_left * 1000);
    }
    this.fillJob(article, job, live);
    const name = job.merchant_site?.name || "A merchant";
    if (live && FINISHED.has(job.outcome) && before !== job.outcome) {
      announce(`${name}: ${this.outcomeLabel(job.outcome)}. ${job.status_message || ""}`);
    } else if (live && isNew) {
      announce(`${name}: new job started.`);
    }
  }

  cloneJob(id) {
    const article = document
      .getElementById("tpl-job")
      .content.firstElementChild.cloneNode(true);
    article.id = `job-${id}`;
    article.dataset.jobId = String(id);
    article.setAttribute("aria-labelledby", `job-${id}-title`);
    article.querySelector(".job__title").id = `job-${id}-title`;
    slot(article, "progress").setAttribute("aria-labelledby", `job-${id}-title`);
    for (const el of article.querySelectorAll("[href]")) {
      el.setAttribute("href", jobUrl(el.getAttribute("href"), id));
    }
    for (const el of article.querySelectorAll("form[action]")) {
      el.setAttribute("action", jobUrl(el.getAttribute("action"), id));
    }
    return article;
  }

  outcomeLabel(outcome) {
    return (this.texts.outcomes || {})[outcome] || outcome;
  }

  fillJob(article, job, live) {
    const outcome = job.outcome || "in_progress";
    const finished = FINISHED.has(outcome);
    let percent = Math.max(0, Math.min(100, Math.round(job.percent_complete || 0)));
    // CardSavr may end a placement below 100; a saved card is complete.
    if (outcome === "success") percent = 100;
    article.className = `job job--${outcome}`;
    article.dataset.version = String(job.version);
    article.dataset.outcome = outcome;
    article.dataset.createdAt = job.created_at || "";

    const logo = slot(article, "logo");
    if (job.merchant_site?.logo) {
      if (logo.getAttribute("src") !== job.merchant_site.logo) {
        logo.setAttribute("src", job.merchant_site.logo);
      }
      logo.hidden = false;
    } else {
      logo.hidden = true;
    }
    setText(slot(article, "link"), job.merchant_site?.name || "");
    const badge = slot(article, "outcome");
    badge.className = `badge badge--${outcome}`;
    setText(badge, this.outcomeLabel(outcome));

    const bar = slot(article, "progress");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", `${percent}% complete`);
    slot(article, "progress-fill").className =
      `progress__fill pct-${percent - (percent % 5)}`;
    setText(slot(article, "percent"), `${percent}% complete`);
    setText(slot(article, "status-message"), job.status_message || "");

    const leave = slot(article, "leave");
    const mayLeave = Boolean(job.may_leave) && !finished;
    if (live && mayLeave && leave.hidden) {
      announce(`${job.merchant_site?.name}: ${leave.textContent}`);
    }
    leave.hidden = !mayLeave;
    slot(article, "result").hidden = !finished;
    setText(slot(article, "next-steps"), finished ? job.next_steps || "" : "");
    slot(article, "retry-form").hidden = !RETRYABLE.has(outcome);
    slot(article, "cancel-form").hidden = finished;

    const request = finished ? null : job.credential_request;
    article.dataset.waiting = request && request.answerable !== false ? "1" : "";
    this.fillPrompt(article, job, request, live);
  }

  promptGroup(type) {
    if (CREDENTIAL_TYPES.has(type)) return "credentials";
    if (TFA_TYPES.has(type)) return "tfa";
    if (type === "tfa_message") return "push";
    if (type === "security") return "security";
    return "other";
  }

  fillPrompt(article, job, request, live) {
    const box = slot(article, "prompt-box");
    const current = box.querySelector(".prompt");
    if (!request) {
      if (current) {
        const hadFocus = current.contains(document.activeElement);
        current.remove();
        if (hadFocus) slot(article, "link").focus();
      }
      return;
    }
    if (current && current.dataset.envelope === request.envelope_id) {
      // Same question: keep what is typed, refresh only the words around it.
      this.updatePrompt(current, job, request);
      return;
    }
    const prompt = this.buildPrompt(job, request);
    const hadFocus = current?.contains(document.activeElement);
    if (current) current.replaceWith(prompt);
    else box.append(prompt);
    initRevealToggles(prompt);
    this.updatePrompt(prompt, job, request);
    if (live || !current) {
      const title = slot(prompt, "prompt-title").textContent;
      announce(`${job.merchant_site?.name} needs your answer: ${title}`);
    }
    const active = document.activeElement;
    const idle = !active || active === document.body || active.id === "main";
    if (hadFocus || (live && idle)) {
      // Move focus only when the cardholder is not busy elsewhere.
      slot(prompt, "prompt-title").focus();
    }
  }

  buildPrompt(job, request) {
    const id = job.id;
    const name = job.merchant_site?.name || "The merchant";
    const group = this.promptGroup(request.type || "");
    const words = (this.texts.prompts || {})[group] || { title: "", hint: "", submit: "Send" };
    const prompt = document
      .getElementById("tpl-prompt")
      .content.firstElementChild.cloneNode(true);
    prompt.className = `prompt prompt--${group}`;
    prompt.dataset.envelope = request.envelope_id;
    prompt.setAttribute("aria-labelledby", `prompt-${id}-title`);
    const title = slot(prompt, "prompt-title");
    title.id = `prompt-${id}-title`;
    setText(title, words.title.replaceAll("{merchant}", name));
    const hint = slot(prompt, "prompt-hint");
    setText(hint, words.hint.replaceAll("{merchant}", name));
    hint.hidden = !words.hint;
    const form = slot(prompt, "reply-form");
    form.setAttribute("action", jobUrl(form.getAttribute("action"), id));
    form.dataset.jobId = String(id);
    slot(prompt, "envelope").value = request.envelope_id;
    setText(slot(prompt, "submit"), words.submit);
    const valid = (request.account_link || []).filter((f) =>
      KEY_NAME_RE.test(f.key_name || ""),
    );
    if (group === "push") {
      // The label carries the live instruction; the portal answers it itself.
      const instruction = valid.map((f) => f.label || "").join(" ").trim();
      setText(
        slot(prompt, "push-instruction"),
        instruction || words.title.replaceAll("{merchant}", name),
      );
      slot(prompt, "push").hidden = false;
      return prompt;
    }
    slot(prompt, "push").hidden = true;
    const fields = slot(prompt, "fields");
    for (const field of valid) fields.append(this.buildField(id, field, request.type || ""));
    return prompt;
  }

  fieldKind(field, type) {
    const key = field.key_name;
    if (field.type === "tfa" || TFA_KEYS.has(key) || TFA_KEYS.has(type)) return "tfa";
    return field.secret ? "secret" : "text";
  }

  buildField(jobId, field, type) {
    const kind = this.fieldKind(field, type);
    const key = field.key_name;
    const label = field.label || key;
    const node = document
      .getElementById(`tpl-field-${kind}`)
      .content.firstElementChild.cloneNode(true);
    node.dataset.key = key;
    if (type === "security") node.classList.add("field--question");
    const input = slot(node, "field-input");
    input.name = key;
    setText(slot(node, "field-label"), label);
    const inputId = `f-${jobId}-${key}`;
    input.id = inputId;
    slot(node, "field-label").setAttribute("for", inputId);
    if (kind !== "tfa") {
      let autocomplete = "off";
      if (["username", "email", "user", "login"].includes(key)) autocomplete = "username";
      else if (key === "password") autocomplete = "current-password";
      input.setAttribute("autocomplete", autocomplete);
    }
    const reveal = slot(node, "reveal");
    if (reveal) reveal.setAttribute("aria-controls", inputId);
    return node;
  }

  updatePrompt(prompt, job, request) {
    const message = slot(prompt, "prompt-message");
    setText(message, request.status_message || "");
    // The job's own status line often says the same; say it once.
    message.hidden =
      !request.status_message || request.status_message === job.status_message;
    prompt.dataset.secondsLeft =
      job.seconds_left === null || job.seconds_left === undefined ? "" : String(job.seconds_left);
    let answerable = request.answerable !== false;
    if (prompt.dataset.sent && !request.reply_error) {
      // Our reply is on its way; CardSavr has not closed the question yet.
      answerable = false;
    } else if (request.reply_error) {
      delete prompt.dataset.sent;
    }
    const form = slot(prompt, "reply-form");
    if (!slot(prompt, "push").hidden) {
      form.hidden = true;
      slot(prompt, "reply-sent").hidden = true;
    } else if (!form.dataset.sending) {
      form.hidden = !answerable;
      slot(prompt, "reply-sent").hidden = answerable;
    }
    const error = slot(prompt, "reply-error");
    if (request.reply_error) {
      setText(error, request.reply_error);
      error.hidden = false;
    }
    this.tickPrompt(job.id, prompt);
  }

  // ------------------------------------------------------ countdowns

  tick() {
    for (const article of this.container.querySelectorAll("article.job")) {
      const prompt = article.querySelector(".prompt");
      if (prompt) this.tickPrompt(Number(article.dataset.jobId), prompt);
    }
  }

  tickPrompt(jobId, prompt) {
    const countdown = slot(prompt, "countdown");
    const deadline = this.deadlines.get(jobId);
    if (deadline === undefined) {
      countdown.hidden = true;
      return;
    }
    const left = Math.max(0, (deadline - Date.now()) / 1000);
    countdown.hidden = false;
    setText(slot(prompt, "countdown-value"), formatSeconds(left));
    const warning = slot(prompt, "countdown-warning");
    const warn = left <= this.warningSeconds;
    warning.hidden = !warn;
    const envelope = prompt.dataset.envelope;
    if (!warn) {
      // CardSavr may extend a deadline; warn again if it comes close again.
      this.warned.delete(envelope);
    } else if (!this.warned.has(envelope)) {
      this.warned.add(envelope);
      const name = prompt.closest("article")?.querySelector('[data-slot="link"]')?.textContent;
      announce(
        `Less than a minute left to answer ${name}. Answer now, or this job ends.`,
        true,
      );
    }
  }

  // ------------------------------------------------------ order and summary

  sortKey(article) {
    const waiting = article.dataset.waiting === "1";
    const id = Number(article.dataset.jobId);
    return {
      waiting,
      deadline: this.deadlines.get(id) ?? Number.MAX_SAFE_INTEGER,
      created: article.dataset.createdAt || "",
      id,
    };
  }

  reorder() {
    const articles = [...this.container.querySelectorAll("article.job")];
    const keyed = articles.map((a) => [a, this.sortKey(a)]);
    keyed.sort(([, a], [, b]) => {
      if (a.waiting !== b.waiting) return a.waiting ? -1 : 1;
      if (a.waiting && a.deadline !== b.deadline) return a.deadline - b.deadline;
      if (a.created !== b.created) return a.created < b.created ? 1 : -1;
      return b.id - a.id;
    });
    const wanted = keyed.map(([a]) => a);
    if (wanted.every((a, i) => a === articles[i])) {
      this.pendingReorder = false;
      return;
    }
    if (this.container.contains(document.activeElement)) {
      // Moving the element someone is typing in would take their focus away.
      this.pendingReorder = true;
      return;
    }
    this.pendingReorder = false;
    for (const article of wanted) this.container.append(article);
  }

  updateSummary() {
    const articles = [...this.container.querySelectorAll("article.job")];
    const waiting = articles.filter((a) => this.sortKey(a).waiting).length;
    const line = document.getElementById("inbox-line");
    if (line) {
      line.dataset.openPrompts = String(waiting);
      setText(
        line,
        waiting
          ? `${waiting} job${waiting === 1 ? "" : "s"} waiting for your answer, most urgent first.`
          : "Nothing is waiting for you.",
      );
    }
    const empty = document.getElementById("jobs-empty");
    if (empty) empty.hidden = articles.length > 0;
    const base = document.title.replace(/^\(\d+\) /, "");
    document.title = waiting ? `(${waiting}) ${base}` : base;
  }

  // ------------------------------------------------------ answering

  async onSubmit(event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.dataset.slot !== "reply-form") return;
    event.preventDefault();
    if (form.dataset.sending) return;
    const prompt = form.closest(".prompt");
    const error = slot(prompt, "reply-error");
    const button = slot(form, "submit");
    const data = new FormData(form);
    const token = data.get("csrfmiddlewaretoken");
    const accountLink = {};
    for (const [key, value] of data.entries()) {
      if (key !== "csrfmiddlewaretoken" && key !== "envelope_id") accountLink[key] = value;
    }
    error.hidden = true;
    form.dataset.sending = "1";
    button.disabled = true;
    const answer = {
      job_id: Number(form.dataset.jobId),
      envelope_id: data.get("envelope_id"),
      account_link: accountLink,
    };
    try {
      const result = this.socketIsOpen()
        ? await this.replyOverSocket(answer)
        : await this.replyOverHttp(answer, token);
      if (result.ok) {
        // Typed secrets leave the page as soon as they are sent.
        for (const input of form.querySelectorAll("input:not([type=hidden])")) input.value = "";
        prompt.dataset.sent = "1";
        form.hidden = true;
        slot(prompt, "reply-sent").hidden = false;
        announce("Sent. Waiting for the merchant to answer.");
        return;
      }
      this.showReplyError(form, error, result.status, result.body);
    } catch (failure) {
      setText(
        error,
        failure?.message === "unconfirmed"
          ? "The connection dropped before the portal confirmed your answer. " +
              "This page shows whether it arrived once it reconnects."
          : "Could not reach the portal. Check your connection and send again.",
      );
      error.hidden = false;
    } finally {
      delete form.dataset.sending;
      button.disabled = false;
    }
  }

  socketIsOpen() {
    return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN);
  }

  // While live, answers go over the open socket: no new request to set up,
  // and the same checks as the HTTP API on the server.
  replyOverSocket(answer) {
    const ref = `reply-${++this.replySeq}`;
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.pendingReplies.delete(ref);
        reject(new Error("unconfirmed"));
      }, REPLY_TIMEOUT_MS);
      this.pendingReplies.set(ref, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ type: "reply", ref, ...answer }));
    });
  }

  settleReply(message) {
    const pending = this.pendingReplies.get(message.ref);
    if (!pending) return;
    this.pendingReplies.delete(message.ref);
    window.clearTimeout(pending.timer);
    pending.resolve({
      ok: message.ok === true,
      status: message.status,
      body: { error: message.error, field: message.field },
    });
  }

  dropPendingReplies() {
    for (const pending of this.pendingReplies.values()) {
      window.clearTimeout(pending.timer);
      pending.reject(new Error("unconfirmed"));
    }
    this.pendingReplies.clear();
  }

  async replyOverHttp(answer, token) {
    const response = await fetch(`/api/jobs/${answer.job_id}/reply/`, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": token,
      },
      body: JSON.stringify({
        envelope_id: answer.envelope_id,
        account_link: answer.account_link,
      }),
    });
    let body = {};
    if (!response.ok) {
      try {
        body = await response.json();
      } catch {
        body = {};
      }
    }
    return { ok: response.ok, status: response.status, body };
  }

  showReplyError(form, error, status, body) {
    let text = body.error;
    if (!text) {
      if (status === 403) text = "Your session has ended. Reload the page and log in again.";
      else if (status === 409) text = "This question was already answered or has expired.";
      else text = "That did not work. Please try again.";
    }
    setText(error, text);
    error.hidden = false;
    if (body.field) {
      const input = form.querySelector(`[name="${CSS.escape(body.field)}"]`);
      if (input && input.type !== "hidden") {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    }
    if (status === 409 || status === 404) this.resync(true);
  }
}

// ---------------------------------------------------------------- start

initRevealToggles();
initSiteFilter();
const jobsContainer = document.getElementById("jobs");
if (jobsContainer && document.body.dataset.live) {
  new JobsPage(jobsContainer);
}
