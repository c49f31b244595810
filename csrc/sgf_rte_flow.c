/* A thin shim between the sgflows-rte-flow installer (Rust) and DPDK 22.11: EAL init, port
 * start, and rte_flow validate/create/destroy/query on rules given as flat structs, so that
 * the Rust side never depends on DPDK's struct layouts or inline functions.
 * Built only with the Cargo feature `dpdk` (build.rs); the Python extension never links it. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_byteorder.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_flow.h>
#include <rte_mbuf.h>

#include "sgf_rte_flow.h"

static struct rte_mempool *pool;

static void put_err(char *err, size_t len, const char *what, int code,
		    const struct rte_flow_error *fe)
{
	if (err == NULL || len == 0)
		return;
	if (fe != NULL && fe->message != NULL)
		snprintf(err, len, "%s: %s (type %d, %s)", what, fe->message, (int)fe->type,
			 strerror(code < 0 ? -code : code));
	else
		snprintf(err, len, "%s: %s", what, strerror(code < 0 ? -code : code));
}

int sgf_protocol_fd(void)
{
	/* EAL and drivers print to stdout; the JSON answers get their own descriptor and
	 * everything else written to stdout goes to stderr. */
	int fd = dup(STDOUT_FILENO);
	if (fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
		return -1;
	return fd;
}

int sgf_eal_init(int argc, char **argv, char *err, size_t len)
{
	int rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		put_err(err, len, "rte_eal_init", rte_errno, NULL);
		return -1;
	}
	return 0;
}

int sgf_port_count(void)
{
	return (int)rte_eth_dev_count_avail();
}

int sgf_port_start(uint16_t port, uint16_t rxq, uint16_t txq, char *err, size_t len)
{
	struct rte_eth_conf conf;
	uint16_t q;
	int rc;

	memset(&conf, 0, sizeof(conf));
	if (pool == NULL) {
		pool = rte_pktmbuf_pool_create("sgf_pool", 2047, 0, 0,
					       RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
		if (pool == NULL) {
			put_err(err, len, "rte_pktmbuf_pool_create", rte_errno, NULL);
			return -1;
		}
	}
	rc = rte_eth_dev_configure(port, rxq, txq, &conf);
	if (rc < 0) {
		put_err(err, len, "rte_eth_dev_configure", rc, NULL);
		return -1;
	}
	for (q = 0; q < rxq; q++) {
		rc = rte_eth_rx_queue_setup(port, q, 128, rte_eth_dev_socket_id(port), NULL, pool);
		if (rc < 0) {
			put_err(err, len, "rte_eth_rx_queue_setup", rc, NULL);
			return -1;
		}
	}
	for (q = 0; q < txq; q++) {
		rc = rte_eth_tx_queue_setup(port, q, 128, rte_eth_dev_socket_id(port), NULL);
		if (rc < 0) {
			put_err(err, len, "rte_eth_tx_queue_setup", rc, NULL);
			return -1;
		}
	}
	rc = rte_eth_dev_start(port);
	if (rc < 0) {
		put_err(err, len, "rte_eth_dev_start", rc, NULL);
		return -1;
	}
	return 0;
}

int sgf_port_queues(uint16_t port, uint16_t *rxq, uint16_t *txq)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);

	if (rc < 0)
		return rc;
	*rxq = info.nb_rx_queues;
	*txq = info.nb_tx_queues;
	return 0;
}

/* The DPDK structs of one rule under construction: spec/mask/last of every item. */
union sgf_item_buf {
	struct rte_flow_item_eth eth;
	struct rte_flow_item_ipv4 ipv4;
	struct rte_flow_item_ipv6 ipv6;
	struct rte_flow_item_tcp tcp;
	struct rte_flow_item_udp udp;
	struct rte_flow_item_sctp sctp;
	struct rte_flow_item_icmp icmp;
	struct rte_flow_item_icmp6 icmp6;
};

struct sgf_built {
	struct rte_flow_attr attr;
	struct rte_flow_item items[SGF_MAX_ITEMS + 1];
	union sgf_item_buf bufs[SGF_MAX_ITEMS][3];
	struct rte_flow_action actions[SGF_MAX_ACTIONS + 1];
	struct rte_flow_action_queue queues[SGF_MAX_ACTIONS];
	struct rte_flow_action_jump jumps[SGF_MAX_ACTIONS];
	struct rte_flow_action_count counts[SGF_MAX_ACTIONS];
};

static void fill(int kind, const struct sgf_fields *f, union sgf_item_buf *b)
{
	memset(b, 0, sizeof(*b));
	switch (kind) {
	case SGF_ITEM_ETH:
		memcpy(b->eth.hdr.src_addr.addr_bytes, f->src, 6);
		memcpy(b->eth.hdr.dst_addr.addr_bytes, f->dst, 6);
		b->eth.hdr.ether_type = rte_cpu_to_be_16(f->eth_type);
		break;
	case SGF_ITEM_IPV4:
		memcpy(&b->ipv4.hdr.src_addr, f->src, 4);
		memcpy(&b->ipv4.hdr.dst_addr, f->dst, 4);
		b->ipv4.hdr.next_proto_id = f->proto;
		break;
	case SGF_ITEM_IPV6:
		memcpy(b->ipv6.hdr.src_addr, f->src, 16);
		memcpy(b->ipv6.hdr.dst_addr, f->dst, 16);
		b->ipv6.hdr.proto = f->proto;
		break;
	case SGF_ITEM_TCP:
		b->tcp.hdr.src_port = rte_cpu_to_be_16(f->src_port);
		b->tcp.hdr.dst_port = rte_cpu_to_be_16(f->dst_port);
		break;
	case SGF_ITEM_UDP:
		b->udp.hdr.src_port = rte_cpu_to_be_16(f->src_port);
		b->udp.hdr.dst_port = rte_cpu_to_be_16(f->dst_port);
		break;
	case SGF_ITEM_SCTP:
		b->sctp.hdr.src_port = rte_cpu_to_be_16(f->src_port);
		b->sctp.hdr.dst_port = rte_cpu_to_be_16(f->dst_port);
		break;
	case SGF_ITEM_ICMP:
		b->icmp.hdr.icmp_type = f->icmp_type;
		b->icmp.hdr.icmp_code = f->icmp_code;
		break;
	case SGF_ITEM_ICMP6:
		b->icmp6.type = f->icmp_type;
		b->icmp6.code = f->icmp_code;
		break;
	default:
		break;
	}
}

static int item_type(int kind, enum rte_flow_item_type *out)
{
	static const enum rte_flow_item_type map[] = {
		[SGF_ITEM_ETH] = RTE_FLOW_ITEM_TYPE_ETH,   [SGF_ITEM_IPV4] = RTE_FLOW_ITEM_TYPE_IPV4,
		[SGF_ITEM_IPV6] = RTE_FLOW_ITEM_TYPE_IPV6, [SGF_ITEM_TCP] = RTE_FLOW_ITEM_TYPE_TCP,
		[SGF_ITEM_UDP] = RTE_FLOW_ITEM_TYPE_UDP,   [SGF_ITEM_SCTP] = RTE_FLOW_ITEM_TYPE_SCTP,
		[SGF_ITEM_ICMP] = RTE_FLOW_ITEM_TYPE_ICMP, [SGF_ITEM_ICMP6] = RTE_FLOW_ITEM_TYPE_ICMP6,
	};
	if (kind < SGF_ITEM_ETH || kind > SGF_ITEM_ICMP6)
		return -1;
	*out = map[kind];
	return 0;
}

static int build(const struct sgf_rule *r, struct sgf_built *b, char *err, size_t len)
{
	int i;

	memset(b, 0, sizeof(*b));
	if (r->n_items > SGF_MAX_ITEMS || r->n_actions > SGF_MAX_ACTIONS) {
		snprintf(err, len, "too many items or actions");
		return -1;
	}
	b->attr.group = r->group;
	b->attr.priority = r->priority;
	b->attr.ingress = r->ingress ? 1 : 0;
	b->attr.egress = r->egress ? 1 : 0;
	for (i = 0; i < r->n_items; i++) {
		const struct sgf_item *it = &r->items[i];
		if (item_type(it->kind, &b->items[i].type) < 0) {
			snprintf(err, len, "unknown item kind %d", it->kind);
			return -1;
		}
		if (it->has_spec) {
			fill(it->kind, &it->spec, &b->bufs[i][0]);
			fill(it->kind, &it->mask, &b->bufs[i][1]);
			b->items[i].spec = &b->bufs[i][0];
			b->items[i].mask = &b->bufs[i][1];
		}
		if (it->has_last) {
			fill(it->kind, &it->last, &b->bufs[i][2]);
			b->items[i].last = &b->bufs[i][2];
		}
	}
	b->items[r->n_items].type = RTE_FLOW_ITEM_TYPE_END;
	for (i = 0; i < r->n_actions; i++) {
		const struct sgf_action *a = &r->actions[i];
		struct rte_flow_action *out = &b->actions[i];
		switch (a->kind) {
		case SGF_ACTION_DROP:
			out->type = RTE_FLOW_ACTION_TYPE_DROP;
			break;
		case SGF_ACTION_PASSTHRU:
			out->type = RTE_FLOW_ACTION_TYPE_PASSTHRU;
			break;
		case SGF_ACTION_QUEUE:
			out->type = RTE_FLOW_ACTION_TYPE_QUEUE;
			b->queues[i].index = (uint16_t)a->arg;
			out->conf = &b->queues[i];
			break;
		case SGF_ACTION_JUMP:
			out->type = RTE_FLOW_ACTION_TYPE_JUMP;
			b->jumps[i].group = a->arg;
			out->conf = &b->jumps[i];
			break;
		case SGF_ACTION_COUNT:
			out->type = RTE_FLOW_ACTION_TYPE_COUNT;
			out->conf = &b->counts[i];
			break;
		default:
			snprintf(err, len, "unknown action kind %d", a->kind);
			return -1;
		}
	}
	b->actions[r->n_actions].type = RTE_FLOW_ACTION_TYPE_END;
	return 0;
}

int sgf_flow_validate(uint16_t port, const struct sgf_rule *r, char *err, size_t len)
{
	struct sgf_built b;
	struct rte_flow_error fe;
	int rc;

	if (build(r, &b, err, len) < 0)
		return -1;
	memset(&fe, 0, sizeof(fe));
	rc = rte_flow_validate(port, &b.attr, b.items, b.actions, &fe);
	if (rc != 0) {
		put_err(err, len, "rte_flow_validate", rc, &fe);
		return -1;
	}
	return 0;
}

void *sgf_flow_create(uint16_t port, const struct sgf_rule *r, char *err, size_t len)
{
	struct sgf_built b;
	struct rte_flow_error fe;
	struct rte_flow *flow;

	if (build(r, &b, err, len) < 0)
		return NULL;
	memset(&fe, 0, sizeof(fe));
	flow = rte_flow_create(port, &b.attr, b.items, b.actions, &fe);
	if (flow == NULL)
		put_err(err, len, "rte_flow_create", rte_errno, &fe);
	return flow;
}

int sgf_flow_destroy(uint16_t port, void *flow, char *err, size_t len)
{
	struct rte_flow_error fe;
	int rc;

	memset(&fe, 0, sizeof(fe));
	rc = rte_flow_destroy(port, (struct rte_flow *)flow, &fe);
	if (rc != 0) {
		put_err(err, len, "rte_flow_destroy", rc, &fe);
		return -1;
	}
	return 0;
}

int sgf_flow_query_count(uint16_t port, void *flow, uint64_t *hits, uint64_t *bytes, char *err,
			 size_t len)
{
	struct rte_flow_action action[2];
	struct rte_flow_query_count count;
	struct rte_flow_error fe;
	int rc;

	memset(action, 0, sizeof(action));
	memset(&count, 0, sizeof(count));
	memset(&fe, 0, sizeof(fe));
	action[0].type = RTE_FLOW_ACTION_TYPE_COUNT;
	action[1].type = RTE_FLOW_ACTION_TYPE_END;
	rc = rte_flow_query(port, (struct rte_flow *)flow, action, &count, &fe);
	if (rc != 0) {
		put_err(err, len, "rte_flow_query", rc, &fe);
		return -1;
	}
	*hits = count.hits_set ? count.hits : 0;
	*bytes = count.bytes_set ? count.bytes : 0;
	return 0;
}

int sgf_rx_lengths(uint16_t port, uint16_t queue, uint32_t *lengths, uint16_t max)
{
	struct rte_mbuf *bufs[32];
	uint16_t n, i, got = 0;

	while (got < max) {
		n = rte_eth_rx_burst(port, queue, bufs, RTE_MIN((uint16_t)32, (uint16_t)(max - got)));
		if (n == 0)
			break;
		for (i = 0; i < n; i++) {
			lengths[got++] = rte_pktmbuf_pkt_len(bufs[i]);
			rte_pktmbuf_free(bufs[i]);
		}
	}
	return got;
}

void sgf_cleanup(void)
{
	uint16_t port;

	RTE_ETH_FOREACH_DEV(port)
	{
		rte_eth_dev_stop(port);
		rte_eth_dev_close(port);
	}
	rte_eal_cleanup();
}
