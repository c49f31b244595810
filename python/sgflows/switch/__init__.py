"""The code that talks to an Open vSwitch bridge, shared by the Neutron firewall driver
(:mod:`sgflows.neutron`, driver mode) and the agent's Open vSwitch dataplane (standalone
mode): what is installed, the atomic bundle that changes it, and the conntrack cleanup after
a cut. Nothing here imports Neutron."""
