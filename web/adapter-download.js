// The trained adapter of a completed job, and its download.
//
// get-job's `adapter` lists the adapter's files with signed URLs that last 15 minutes. Those URLs
// are not part of the ETag, so a 304 keeps the ones of the last 200, and the page stops polling
// once the job has ended: the URLs it holds may long have expired. So a download first asks
// get-job again without If-None-Match (a fresh 200 with fresh URLs), then fetches each file and
// saves it under its own name. A failure says what went wrong and what to do; where the storage
// could not be reached from the page, the file's fresh link is offered to open directly.

import { ApiError } from "./api.js";
import * as fmt from "./format.js";
import { lastStep } from "./series.js";

// PEFT's two files, weights first; any other file the API lists comes after, by name.
const FILE_ORDER = ["adapter_model.safetensors", "adapter_config.json"];
const DESCRIPTIONS = {
  "adapter_model.safetensors": "The LoRA weights",
  "adapter_config.json": "PEFT's configuration: base model, rank, target modules",
};

/**
 * Wires the Download adapter button. `state.download` holds the download under way or last
 * tried: `{running, message, kind, files: {name: {state, received, total, size, href, url}}}`.
 * Returns `destroy()`, which lets go of the saved files' object URLs.
 */
export function bindAdapterDownload(view, { api, jobId, state }) {
  const render = () => renderAdapter(view, state);
  view.action("download-adapter").addEventListener("click", () => download());

  async function download() {
    if (state.download?.running) return;
    releaseFiles(state);
    const progress = { running: true, message: "Getting fresh download links…", kind: "info" };
    state.download = { ...progress, files: {} };
    render();

    let adapter;
    try {
      // No ETag: a fresh 200, whose URLs are signed now. Only the points after the last step
      // held are asked for, so the answer is small.
      const result = await api.getJob(jobId, { sinceStep: lastStep(state.points) });
      adapter = result.data.adapter ?? null;
      state.adapter = adapter;
    } catch (failure) {
      finish(state, linksFailure(failure), "error");
      render();
      return;
    }
    if (!adapter) {
      finish(state, "The adapter is no longer stored, so there is nothing to download.", "error");
      render();
      return;
    }

    const names = orderedNames(adapter.files);
    const files = Object.fromEntries(names.map((name) => [name, { state: "waiting" }]));
    state.download.files = files;
    const failures = [];
    for (const name of names) {
      const file = files[name];
      file.state = "downloading";
      state.download.message = `Downloading ${name}…`;
      render();
      try {
        const blob = await fetchFile(adapter.files[name], (received, total) => {
          const before = percentOf(file.received, file.total);
          Object.assign(file, { received, total });
          if (percentOf(received, total) !== before) render();
        });
        file.state = "saved";
        file.size = blob.size;
        file.href = URL.createObjectURL(blob);
        save(view.root, file.href, name);
      } catch (failure) {
        file.state = "failed";
        // Where the page itself could not fetch it, the fresh link may still open directly.
        if (failure.unreachable) file.url = adapter.files[name];
        failures.push(fileFailure(name, failure, adapter.expires_at));
      }
      render();
    }
    if (failures.length === 0) {
      const saved = names.map((name) => `${name} (${fmt.bytes(files[name].size)})`);
      finish(state, `Downloaded ${saved.join(" and ")}.`, "success");
    } else {
      finish(state, failures.join(" "), "error");
    }
    render();
  }

  return { destroy: () => releaseFiles(state) };
}

/** The section shows for a completed job with an adapter (or a download tried on one). */
export function renderAdapter(view, state) {
  const { fields } = view;
  const { download } = state;
  const shown =
    state.job?.status === "completed" &&
    !state.problem &&
    (state.adapter != null || download != null);
  fields.adapter.hidden = !shown;
  if (!shown) return;

  const button = view.action("download-adapter");
  const running = download?.running ?? false;
  button.disabled = running;
  button.textContent = running ? "Downloading…" : "Download adapter";

  const files = download?.files ?? {};
  const names = orderedNames(Object.keys(files).length > 0 ? files : state.adapter?.files ?? {});
  fields["adapter-files"].replaceChildren(...names.map((name) => fileItem(name, files[name])));

  const status = fields["adapter-status"];
  const message = download?.message ?? "";
  if (status.textContent !== message) status.textContent = message;
  status.dataset.kind = download?.kind ?? "";
}

function fileItem(name, file) {
  const item = document.createElement("li");
  item.className = "lrm-file";
  item.dataset.file = name;
  item.dataset.state = file?.state ?? "ready";

  let label;
  if (file?.href) {
    // Saved: the link saves it again, from memory.
    label = document.createElement("a");
    label.href = file.href;
    label.download = name;
  } else if (file?.url) {
    label = document.createElement("a");
    label.href = file.url;
    label.target = "_blank";
    label.rel = "noopener noreferrer";
  } else {
    label = document.createElement("span");
  }
  label.className = "lrm-file-name lrm-mono";
  label.textContent = name;

  const about = document.createElement("span");
  about.className = "lrm-file-about";
  about.textContent = DESCRIPTIONS[name] ?? "Adapter file";

  const progress = document.createElement("span");
  progress.className = "lrm-file-state";
  progress.textContent = fileState(file);
  item.append(label, about, progress);
  return item;
}

function fileState(file) {
  switch (file?.state) {
    case "waiting":
      return "Waiting";
    case "downloading": {
      const percent = percentOf(file.received, file.total);
      if (percent !== null) return `Downloading… ${percent}%`;
      return file.received ? `Downloading… ${fmt.bytes(file.received)}` : "Downloading…";
    }
    case "saved":
      return `Saved · ${fmt.bytes(file.size)}`;
    case "failed":
      return file.url ? "Not saved · open the link" : "Not saved";
    default:
      return "";
  }
}

function orderedNames(files) {
  const rank = (name) => {
    const index = FILE_ORDER.indexOf(name);
    return index === -1 ? FILE_ORDER.length : index;
  };
  return Object.keys(files).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function percentOf(received, total) {
  if (!total || received == null) return null;
  return Math.min(100, Math.floor((received / total) * 100));
}

function finish(state, message, kind) {
  Object.assign(state.download, { running: false, message, kind });
}

function releaseFiles(state) {
  for (const file of Object.values(state.download?.files ?? {})) {
    if (file.href) URL.revokeObjectURL(file.href);
  }
}

/** Why get-job could not give fresh links, and what to do. */
function linksFailure(failure) {
  if (failure instanceof ApiError) {
    if (failure.status === 401) {
      return "Your session has expired: sign in again, then download the adapter.";
    }
    if (failure.status === 404) return "This training job is no longer available.";
    if (failure.status === 0) {
      return (
        "The download links could not be fetched: the server could not be reached. " +
        "Check your connection and try again."
      );
    }
  }
  return `The download links could not be fetched: ${failure.message} Try again in a moment.`;
}

function fileFailure(name, failure, expiresAt) {
  if (failure.unreachable) {
    return (
      `${name} could not be downloaded here: the storage could not be reached from this page. ` +
      `Open its link above (valid until ${fmt.timeOfDay(expiresAt)}), or try again.`
    );
  }
  return `${name} could not be downloaded (${failure.message}). Try again: each try signs new links.`;
}

class FileFailure extends Error {
  constructor(message, { unreachable = false } = {}) {
    super(message);
    this.unreachable = unreachable;
  }
}

/** The file at a signed URL, reporting bytes received (and the total, when the server says). */
async function fetchFile(url, onProgress) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store", credentials: "omit" });
  } catch {
    // The network, or storage that does not allow this page's origin (CORS): both look alike.
    throw new FileFailure("unreachable", { unreachable: true });
  }
  if (!response.ok) {
    throw new FileFailure(
      response.status === 403
        ? "the storage refused the link (403)"
        : `the storage answered ${response.status}`,
    );
  }
  const type = response.headers.get("Content-Type") ?? "application/octet-stream";
  if (!response.body) return response.blob();
  const total = Number(response.headers.get("Content-Length")) || null;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.length;
      onProgress(received, total);
    }
  } catch {
    throw new FileFailure("the download was interrupted");
  }
  return new Blob(chunks, { type });
}

/** Hands the browser a file to save under `name`, as a click on a download link would. */
function save(root, href, name) {
  const link = document.createElement("a");
  link.href = href;
  link.download = name;
  link.hidden = true;
  root.append(link);
  link.click();
  link.remove();
}
