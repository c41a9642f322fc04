// The two HTTP endpoints the monitor talks to: get-job and cancel-job (openapi/get-job.yaml,
// openapi/cancel-job.yaml).

/** A refusal or failure of an API call; `status` is 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  /** Worth retrying: the network, a busy server or an upstream outage, not a refusal. */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

const trimSlash = (url) => url.replace(/\/+$/, "");

export class JobApi {
  /**
   * @param {object} options
   * @param {string} options.getJobUrl     base URL of the get-job function
   * @param {string} options.cancelJobUrl  base URL of the cancel-job function
   * @param {() => Promise<string|null>} options.getAccessToken  the signed-in user's JWT;
   *   asked before every request, so a refreshed Supabase session is picked up
   * @param {number} [options.maxPoints]   points per series the server may send at most
   */
  constructor({ getJobUrl, cancelJobUrl, getAccessToken, maxPoints = 500 }) {
    this.getJobUrl = trimSlash(getJobUrl);
    this.cancelJobUrl = trimSlash(cancelJobUrl);
    this.getAccessToken = getAccessToken;
    this.maxPoints = maxPoints;
  }

  /**
   * The job, its dataset, its metrics after `sinceStep`, its costs, its place in line (`queue`)
   * and its adapter's download URLs (`adapter`). Resolves to `{notModified: true}` when the
   * server answers 304 to `etag`; without an `etag` the answer is always a fresh 200.
   */
  async getJob(jobId, { sinceStep = null, etag = null, signal } = {}) {
    const url = new URL(`${this.getJobUrl}/${encodeURIComponent(jobId)}`);
    url.searchParams.set("max_points", String(this.maxPoints));
    if (sinceStep !== null) url.searchParams.set("since_step", String(sinceStep));
    const headers = await this.#headers();
    if (etag) headers["If-None-Match"] = etag;
    const response = await this.#send(url, { headers, signal, cache: "no-store" });
    if (response.status === 304) return { notModified: true, etag };
    const body = await this.#successBody(response);
    return { notModified: false, etag: response.headers.get("ETag"), data: body.data };
  }

  /** Cancels the job; resolves to the cancelled job. */
  async cancelJob(jobId, { signal } = {}) {
    const url = `${this.cancelJobUrl}/${encodeURIComponent(jobId)}`;
    const response = await this.#send(url, {
      method: "POST",
      headers: await this.#headers(),
      signal,
    });
    const body = await this.#successBody(response);
    return body.data.job ?? body.data;
  }

  async #headers() {
    const token = await this.getAccessToken();
    if (!token) throw new ApiError(401, "no_session", "You are not signed in.");
    return { Authorization: `Bearer ${token}`, Accept: "application/json" };
  }

  async #send(url, init) {
    try {
      return await fetch(url, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "The server could not be reached.");
    }
  }

  async #successBody(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's error page, a cut connection): the status tells what happened.
    }
    if (response.ok && body?.success) return body;
    if (response.ok) {
      throw new ApiError(502, "bad_response", "The server sent an answer the page cannot read.");
    }
    const error = body?.error ?? {};
    throw new ApiError(
      response.status,
      error.code ?? `http_${response.status}`,
      error.message ?? `The server answered ${response.status}.`,
    );
  }
}
