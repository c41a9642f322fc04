// The monitor as a page of its own (index.html), configured by the URL's fragment:
//
//   index.html#job=<job id>&get_job=<get-job URL>&cancel_job=<cancel-job URL>&token=<access token>
//
// optionally with &poll=<seconds>. `make dev` prints such a URL. The fragment never leaves the
// browser, so the token is not sent to the server that serves this page nor written in its logs.

import { mountMonitor } from "./monitor.js";

const REQUIRED = ["job", "get_job", "cancel_job", "token"];

function showMissing(element, missing) {
  element.classList.add("lrm");
  const box = document.createElement("section");
  box.className = "lrm-problem lrm-setup";
  const title = document.createElement("h1");
  title.textContent = "This page needs to know which job to show";
  const text = document.createElement("p");
  const command = document.createElement("code");
  command.textContent = "make dev";
  const example = document.createElement("code");
  example.textContent =
    "#job=<job id>&get_job=<get-job URL>&cancel_job=<cancel-job URL>&token=<access token>";
  text.append(
    `The link is missing ${missing.join(", ")}. Open the link that `,
    command,
    " printed, or end this address with ",
    example,
  );
  box.append(title, text);
  element.replaceChildren(box);
}

function boot() {
  const element = document.getElementById("monitor");
  const params = new URLSearchParams(window.location.hash.slice(1));
  const missing = REQUIRED.filter((name) => !params.get(name));
  if (missing.length > 0) {
    showMissing(element, missing);
    return;
  }
  const token = params.get("token");
  const poll = Number(params.get("poll"));
  mountMonitor(element, {
    jobId: params.get("job"),
    getJobUrl: params.get("get_job"),
    cancelJobUrl: params.get("cancel_job"),
    getAccessToken: async () => token,
    pollIntervalMs: poll > 0 ? poll * 1000 : undefined,
    documentTitle: true,
  });
}

// Another job's link opened in this tab changes only the fragment: start over on it.
window.addEventListener("hashchange", () => window.location.reload());
boot();
