"""The production wiring: clients built once per process from the environment.

One module per concern, so that each function imports only the wiring it uses and its deployment
bundle (infra/bundle.py follows the imports) carries only the dependencies that wiring needs:
get-job never installs boto3, the processor never installs PyJWT.

Cloud Functions reuse a process across invocations, so the database pool, the storage client and
the token verifier (with its cached signing keys) are kept; the cluster client is made per cycle
(or per cancel) because its connections belong to that call's event loop.
"""
