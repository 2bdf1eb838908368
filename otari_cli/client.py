"""Gateway: the one HTTP client of the CLI; failures become errors that carry exit codes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import jiter

from otari_cli import jsontext
from otari_cli.errors import AuthFailed, Unreachable, error_for_status

DEFAULT_TIMEOUT = 10.0
Params = Mapping[str, str | int | None]


def path(*segments: str) -> str:
    """An API path from segments, each percent-encoded (model keys hold ':' and '/')."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def encode(body: object) -> bytes:
    """JSON text for a request body; Decimal money is written as an exact JSON number."""
    return jsontext.dumps(body).encode()


def decode(text: str | bytes) -> Any:
    """Parse a JSON response; numbers with a fraction become Decimal, never float.

    jiter (Rust) reads each number's digits into the Decimal exactly, at twice the speed
    of the standard library: `otari usage --all` decodes a million rows. Raises ValueError.
    """
    return jiter.from_json(text.encode() if isinstance(text, str) else text, float_mode="decimal")


def error_message(response: httpx.Response) -> str:
    """The gateway's own words for an error response, on one line."""
    try:
        body = decode(response.text)
    except ValueError:
        body = response.text.strip()
    detail: Any = body.get("detail", body.get("error")) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message", detail)
    if isinstance(detail, list):
        detail = "; ".join(_validation_problem(item) for item in detail)
    text = " ".join(str(detail).split()) if detail not in (None, "") else response.reason_phrase
    return f"HTTP {response.status_code}: {text[:500]}"


def _validation_problem(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc", []) if part not in ("body", "query", "path")]
    where = ".".join(loc)
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", item))


# JSON Lines, which GET /v1/usage answers when asked (one row per line).
NDJSON = "application/x-ndjson"


# The management API: every path under these needs the master key (the gateway refuses it
# without one), so the CLI does not send such a request to a gateway named by --url/OTARI_URL
# without a key: it may not be an otari gateway at all. (The local daemon and contexts are
# asked anyway: not running is exit 3 with a hint, a missing key exit 4 from the answer.)
MASTER_PATHS = (
    "/v1/keys",
    "/v1/users",
    "/v1/budgets",
    "/v1/pricing",
    "/v1/usage",
    "/v1/alerts",
    "/v1/routes",
    "/v1/providers",
)
KEY_HINT = (
    "pass --master-key or set OTARI_MASTER_KEY, or add a context with its key: otari context add"
)


class Gateway:
    """A client for one gateway: base URL, master key, and a timeout on every call."""

    def __init__(
        self,
        url: str,
        master_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        hint: str = "",
        require_key: bool = False,
    ) -> None:
        headers = {"User-Agent": "otari-cli", "Accept": "application/json"}
        if master_key:
            headers["Authorization"] = f"Bearer {master_key}"
        self.has_key = bool(master_key)
        self.url = url
        self.timeout = timeout
        self.hint = hint
        # A gateway named by --url/OTARI_URL: without a key, management requests are not sent.
        self.require_key = require_key
        # Plain-http gateways (the local daemon) need no TLS context: skip loading CA certificates.
        self._http = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=url.startswith("https:"),
        )

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def send(
        self,
        method: str,
        url_path: str,
        *,
        params: Params | None = None,
        body: object = None,
        timeout: float | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        """One HTTP exchange (`timeout` overrides the client's, `accept` its Accept header);
        transport failures become Unreachable (exit 3)."""
        if self.require_key and not self.has_key and url_path.startswith(MASTER_PATHS):
            # Decided here: a request that needs the master key is not sent without one
            # (to a gateway that is not ours it would tell it what we manage, and fail).
            raise AuthFailed(
                401,
                f"{method} {url_path} needs the master key and none is "
                f"known for {self.url}: {KEY_HINT}",
            )
        wait = self.timeout if timeout is None else timeout
        query = {k: v for k, v in (params or {}).items() if v is not None}
        content = None if body is None else encode(body)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        try:
            return self._http.request(
                method,
                url_path,
                params=query or None,
                content=content,
                headers=headers,
                timeout=wait,
            )
        except httpx.TimeoutException:
            raise Unreachable(
                f"the gateway at {self.url} did not answer within {wait:g}s{self.hint}"
            ) from None
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the gateway at {self.url}: {exc}{self.hint}") from None

    def call(
        self,
        method: str,
        url_path: str,
        *,
        params: Params | None = None,
        body: object = None,
        timeout: float | None = None,
    ) -> Any:
        """Send, raise the matching error for a non-2xx answer, and return the decoded body."""
        response = self.send(method, url_path, params=params, body=body, timeout=timeout)
        if response.status_code >= 400:
            message = error_message(response)
            if response.status_code in (401, 403) and not self.has_key:
                message += f" (no master key was sent to {self.url}: {KEY_HINT})"
            raise error_for_status(response.status_code, message)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return decode(response.text)
        except ValueError:
            return response.text

    def get(self, url_path: str, params: Params | None = None) -> Any:
        """GET and decode."""
        return self.call("GET", url_path, params=params)

    def post(self, url_path: str, body: object, *, timeout: float | None = None) -> Any:
        """POST a JSON body and decode (`timeout` for calls known to be slow)."""
        return self.call("POST", url_path, body=body, timeout=timeout)

    def put(self, url_path: str, body: object) -> Any:
        """PUT a JSON body (create or replace) and decode."""
        return self.call("PUT", url_path, body=body)

    def patch(self, url_path: str, body: object) -> Any:
        """PATCH a JSON body and decode."""
        return self.call("PATCH", url_path, body=body)

    def delete(self, url_path: str, params: Params | None = None) -> None:
        """DELETE (the answer is 204 No Content)."""
        self.call("DELETE", url_path, params=params)

    def pages(
        self,
        url_path: str,
        params: Params | None = None,
        *,
        page_size: int = 100,
        limit: int | None = None,
    ) -> list[Any]:
        """Every item of a skip/limit list (or the first `limit`), fetching until a short page."""
        items: list[Any] = []
        while limit is None or len(items) < limit:
            want = page_size if limit is None else min(page_size, limit - len(items))
            page = self.get(url_path, {**(params or {}), "skip": len(items), "limit": want})
            if not isinstance(page, list):
                raise error_for_status(502, f"expected a list from {url_path}")
            items.extend(page[:want])
            if len(page) < want:
                break
        return items

    def walk(
        self,
        url_path: str,
        params: Params | None = None,
        *,
        page_size: int = 100,
        limit: int | None = None,
        lines: bool = False,
    ) -> Iterator[Any]:
        """Every item of a list (or the first `limit`), yielded page by page as they arrive.

        Follows the `Link: <...>; rel="next"` cursor the gateway sends on full pages, so deep
        pages cost as little as the first; a gateway without it is paged by skip. The next
        page is fetched while the caller writes the current one; at most two are held.
        With `lines`, each item is its compact JSON text (bytes, no newline) as the gateway
        wrote it in JSON Lines, so an exporter writes it through without parsing.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="otari-page") as pool:
            want = page_size if limit is None else min(page_size, limit)
            pending = pool.submit(self._page, url_path, params, None, 0, want, lines)
            count = 0
            while True:
                page, link = pending.result()
                taken = page[:want]
                count += len(taken)
                more = len(page) >= want and (limit is None or count < limit)
                if more:
                    want = page_size if limit is None else min(page_size, limit - count)
                    pending = pool.submit(self._page, url_path, params, link, count, want, lines)
                yield from taken
                if not more:
                    return

    def _page(
        self,
        url_path: str,
        params: Params | None,
        link: httpx.URL | None,
        skip: int,
        want: int,
        lines: bool = False,
    ) -> tuple[list[Any], httpx.URL | None]:
        """One page of a list and the link to the next (None: page by skip)."""
        accept = NDJSON if lines else None
        if link is None:
            response = self.send(
                "GET",
                url_path,
                accept=accept,
                params={**(params or {}), "skip": skip, "limit": want},
            )
        else:
            # Only the link's path and query are used, so credentials never follow it to
            # another host; the page size rides in that query (params would replace it).
            target = link.copy_merge_params({"limit": str(want)}).raw_path.decode("ascii")
            response = self.send("GET", target, accept=accept)
        if response.status_code >= 400:
            raise error_for_status(response.status_code, error_message(response))
        found = response.links.get("next", {}).get("url")
        following = httpx.URL(found) if found else None
        if lines and response.headers.get("content-type", "").startswith(NDJSON):
            # A JSON string never holds a raw newline: each line is one whole item.
            return response.content.splitlines(), following
        page = decode(response.content)
        if not isinstance(page, list):
            raise error_for_status(502, f"expected a list from {url_path}")
        if lines:  # a gateway without JSON Lines: the same compact text, written here
            page = [jsontext.dumps(item).encode() for item in page]
        return page, following

    def readiness(self) -> tuple[bool, Any]:
        """Whether /health/readiness answers 200, and its body."""
        response = self.send("GET", "/health/readiness")
        try:
            body = decode(response.text)
        except ValueError:
            body = response.text
        return response.status_code == 200, body
