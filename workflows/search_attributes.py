"""Typed keys of the search attributes the run workflow sets (names in `perdure.names`)."""

from temporalio.common import SearchAttributeKey

from perdure import names

AGENT_ID = SearchAttributeKey.for_keyword(names.AGENT_ID_ATTRIBUTE)
RUN_STATUS = SearchAttributeKey.for_keyword(names.RUN_STATUS_ATTRIBUTE)
STOP_REASON = SearchAttributeKey.for_keyword(names.STOP_REASON_ATTRIBUTE)
PERDURE_RUN_ID = SearchAttributeKey.for_keyword(names.PERDURE_RUN_ID_ATTRIBUTE)
AGENT_NAME = SearchAttributeKey.for_keyword(names.AGENT_NAME_ATTRIBUTE)
