"""The transport conformance suite: one set of cases, run on every transport.

Layout:

* :mod:`tests.conformance.harness`: the interface a transport provides to the suite
  (:class:`~tests.conformance.harness.TransportHarness`), the faults it can be asked for
  (:class:`~tests.conformance.harness.Faults`) and the generic fault wrapper for transports
  that cannot inject them themselves.
* :mod:`tests.conformance.memory`, :mod:`tests.conformance.relay`: the harnesses of the
  memory transport and of the relay (its WebSocket links point to point, and two devices
  syncing through a running relay).
* :mod:`tests.conformance.harnesses`: the registry, :data:`HARNESSES`, that the suite's
  fixtures are parametrised over.
* :mod:`tests.conformance.test_suite`: the cases, written once. A case that takes the
  ``harness`` fixture runs on every harness; one that takes ``direct_harness`` runs on the
  point-to-point ones (it drives one end of a link by hand, or asserts on both sessions of
  one link). Relay-specific versions of the direct cases, with the relay as the peer, are in
  ``tests/test_store_and_forward.py``.

To add a transport (LAN, BLE): write a harness (an object with ``name``, ``native_faults``,
``max_frame``, ``instant_hangup``, ``hub``, ``connect`` and ``sync``; point-to-point ones
subclass :class:`~tests.conformance.harness.PointToPoint`, which provides ``hub`` and
``sync``), and add a :class:`~tests.conformance.harnesses.HarnessSpec` to ``HARNESSES``.
Every case then runs on it, under its name in the test id.
"""
