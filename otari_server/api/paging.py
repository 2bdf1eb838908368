"""Query parameters shared by list endpoints; the limit is bounded to avoid full scans."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_PAGE = 1000

Skip = Annotated[int, Query(ge=0, le=10**9, description="Number of items to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size (at most {MAX_PAGE})")]
