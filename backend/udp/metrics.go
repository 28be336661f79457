package udp

import "github.com/prometheus/client_golang/prometheus"

// The backend exports its counters as Prometheus metrics: the daemon
// registers any backend that is a prometheus.Collector.
var (
	descPackets = prometheus.NewDesc("flannel_udp_packets_total",
		"Inner packets moved by the udp backend: tx = TUN to the wire, rx = wire to the TUN.", []string{"direction"}, nil)
	descBytes = prometheus.NewDesc("flannel_udp_bytes_total",
		"Inner bytes moved by the udp backend.", []string{"direction"}, nil)
	descDrops = prometheus.NewDesc("flannel_udp_drops_total",
		"Packets the udp backend did not forward, by reason.", []string{"reason"}, nil)
	descICMP = prometheus.NewDesc("flannel_udp_icmp_unreachable_total",
		"ICMP destination-unreachable messages sent back for Network addresses no lease covers.", nil, nil)
)

// Describe implements prometheus.Collector.
func (b *Backend) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPackets
	ch <- descBytes
	ch <- descDrops
	ch <- descICMP
}

// Collect implements prometheus.Collector.
func (b *Backend) Collect(ch chan<- prometheus.Metric) {
	s := b.Stats()
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.TxPackets), "tx")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.RxPackets), "rx")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.TxBytes), "tx")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.RxBytes), "rx")
	for _, reason := range dropNames {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(s.Drops[reason]), reason)
	}
	ch <- prometheus.MustNewConstMetric(descICMP, prometheus.CounterValue, float64(s.ICMPSent))
}
