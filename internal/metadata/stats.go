package metadata

import "time"

// Stats is one container's resource usage in the shape of Docker's stats
// API (v1.30), which is what the endpoint's /stats paths return; the v4
// endpoint adds network_rate_stats.
type Stats struct {
	Read         time.Time               `json:"read"`
	PreRead      time.Time               `json:"preread"`
	Name         string                  `json:"name"`
	ID           string                  `json:"id"`
	NumProcs     uint32                  `json:"num_procs"`
	PidsStats    PidsStats               `json:"pids_stats"`
	CPUStats     CPUStats                `json:"cpu_stats"`
	PreCPUStats  CPUStats                `json:"precpu_stats"`
	MemoryStats  MemoryStats             `json:"memory_stats"`
	BlkioStats   BlkioStats              `json:"blkio_stats"`
	Networks     map[string]NetworkStats `json:"networks,omitempty"`
	NetworkRates *NetworkRates           `json:"network_rate_stats,omitempty"`
}

type PidsStats struct {
	Current uint64 `json:"current,omitempty"`
	Limit   uint64 `json:"limit,omitempty"`
}

type CPUStats struct {
	CPUUsage       CPUUsage       `json:"cpu_usage"`
	SystemUsage    uint64         `json:"system_cpu_usage,omitempty"`
	OnlineCPUs     uint32         `json:"online_cpus,omitempty"`
	ThrottlingData ThrottlingData `json:"throttling_data"`
}

// CPUUsage is in nanoseconds of CPU time.
type CPUUsage struct {
	TotalUsage        uint64   `json:"total_usage"`
	PercpuUsage       []uint64 `json:"percpu_usage,omitempty"`
	UsageInKernelmode uint64   `json:"usage_in_kernelmode"`
	UsageInUsermode   uint64   `json:"usage_in_usermode"`
}

type ThrottlingData struct {
	Periods          uint64 `json:"periods"`
	ThrottledPeriods uint64 `json:"throttled_periods"`
	ThrottledTime    uint64 `json:"throttled_time"`
}

type MemoryStats struct {
	Usage    uint64            `json:"usage,omitempty"`
	MaxUsage uint64            `json:"max_usage,omitempty"`
	Stats    map[string]uint64 `json:"stats,omitempty"`
	Failcnt  uint64            `json:"failcnt,omitempty"`
	Limit    uint64            `json:"limit,omitempty"`
}

type BlkioStats struct {
	IoServiceBytesRecursive []BlkioEntry `json:"io_service_bytes_recursive"`
	IoServicedRecursive     []BlkioEntry `json:"io_serviced_recursive"`
	IoQueuedRecursive       []BlkioEntry `json:"io_queue_recursive"`
	IoServiceTimeRecursive  []BlkioEntry `json:"io_service_time_recursive"`
	IoWaitTimeRecursive     []BlkioEntry `json:"io_wait_time_recursive"`
	IoMergedRecursive       []BlkioEntry `json:"io_merged_recursive"`
	IoTimeRecursive         []BlkioEntry `json:"io_time_recursive"`
	SectorsRecursive        []BlkioEntry `json:"sectors_recursive"`
}

type BlkioEntry struct {
	Major uint64 `json:"major"`
	Minor uint64 `json:"minor"`
	Op    string `json:"op"`
	Value uint64 `json:"value"`
}

type NetworkStats struct {
	RxBytes   uint64 `json:"rx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxErrors  uint64 `json:"tx_errors"`
	TxDropped uint64 `json:"tx_dropped"`
}

type NetworkRates struct {
	RxBytesPerSec float64 `json:"rx_bytes_per_sec"`
	TxBytesPerSec float64 `json:"tx_bytes_per_sec"`
}
