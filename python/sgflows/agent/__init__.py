"""The sgflows agent: control plane (RPC, status), dataplane loop, IPv6 metadata election.

Needs the ``agent`` extra: ``pip install 'sgflows[agent]'``.
"""
