"""The servers' core: what the emulator, the bridge and any later server of this package
share, with no azure-core and no client module under it.

* :mod:`._rules`: a request as a small frozen record, a protocol's rules as a table of
  named checks over it, the runner (the first refusal wins, or the request is accepted),
  and the one helper that turns a refusal into an answer; the tables every server shares
  (admission: loopback, not relayed, not a browser; framing: what the parser may let by).
* :mod:`._legacy`: the legacy extension's protocol, one table of those checks, and its
  answer.
"""
