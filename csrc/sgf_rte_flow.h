/* The flat rule form the Rust installer hands to the shim (mirrored in src/bin/rte_flow/ffi.rs). */
#ifndef SGF_RTE_FLOW_H
#define SGF_RTE_FLOW_H
#include <stddef.h>
#include <stdint.h>

#define SGF_MAX_ITEMS 8
#define SGF_MAX_ACTIONS 4

enum { SGF_ITEM_ETH = 1, SGF_ITEM_IPV4, SGF_ITEM_IPV6, SGF_ITEM_TCP, SGF_ITEM_UDP,
       SGF_ITEM_SCTP, SGF_ITEM_ICMP, SGF_ITEM_ICMP6 };
enum { SGF_ACTION_DROP = 1, SGF_ACTION_PASSTHRU, SGF_ACTION_QUEUE, SGF_ACTION_JUMP,
       SGF_ACTION_COUNT };

/* Addresses in network order (MAC 6 bytes, IPv4 4, IPv6 16); 16-bit fields in host order. */
struct sgf_fields {
	uint8_t src[16];
	uint8_t dst[16];
	uint16_t eth_type;
	uint16_t src_port;
	uint16_t dst_port;
	uint8_t proto;
	uint8_t icmp_type;
	uint8_t icmp_code;
};

struct sgf_item {
	int32_t kind;
	int32_t has_spec;
	int32_t has_last;
	struct sgf_fields spec, mask, last;
};

struct sgf_action {
	int32_t kind;
	uint32_t arg;
};

struct sgf_rule {
	uint32_t group;
	uint32_t priority;
	int32_t ingress;
	int32_t egress;
	int32_t n_items;
	int32_t n_actions;
	const struct sgf_item *items;
	const struct sgf_action *actions;
};

int sgf_protocol_fd(void);
int sgf_eal_init(int argc, char **argv, char *err, size_t len);
int sgf_port_count(void);
int sgf_port_start(uint16_t port, uint16_t rxq, uint16_t txq, char *err, size_t len);
/* The rx and tx queues the port is configured with, as DPDK reports them. */
int sgf_port_queues(uint16_t port, uint16_t *rxq, uint16_t *txq);
int sgf_flow_validate(uint16_t port, const struct sgf_rule *r, char *err, size_t len);
void *sgf_flow_create(uint16_t port, const struct sgf_rule *r, char *err, size_t len);
int sgf_flow_destroy(uint16_t port, void *flow, char *err, size_t len);
int sgf_flow_query_count(uint16_t port, void *flow, uint64_t *hits, uint64_t *bytes, char *err,
			 size_t len);
/* Receives what is waiting on one queue: the frames' lengths (the frames are freed). */
int sgf_rx_lengths(uint16_t port, uint16_t queue, uint32_t *lengths, uint16_t max);
void sgf_cleanup(void);
#endif
