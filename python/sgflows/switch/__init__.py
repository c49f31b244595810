"""The code that talks to an Open vSwitch bridge, shared by the Neutron firewall driver
(:mod:`sgflows.neutron`, driver mode) and the agent's Open vSwitch dataplane (standalone
mode): the session and what is installed (:mod:`.flowstate`), the bundles that change it
(:mod:`.bundles`: incremental, and the two kinds of full sync), the parallel first install
onto an empty bridge (:mod:`.coldload`), and the conntrack cleanup after a cut
(:mod:`.conntrack`). Nothing here imports Neutron."""
