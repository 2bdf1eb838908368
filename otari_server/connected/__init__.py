"""Connected mode: the gateway as a data plane for an otari platform."""
