"""sgflows as a firewall driver of neutron-openvswitch-agent (``firewall_driver = sgflows``).

The driver class is :class:`sgflows.neutron.firewall.SgflowsFirewallDriver`, registered under
the ``neutron.agent.firewall_drivers`` entry point as ``sgflows``. Only that module imports
Neutron, and only when the agent loads it: ``sgflows`` installs into the agent's environment
without pulling Neutron in, and this package's other modules (the model it builds, the flow
state it keeps) are plain Python that the test suite exercises without Neutron.
"""
