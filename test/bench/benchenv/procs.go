package benchenv

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on Linux).
const clockTicks = 100

// CPU is CPU time spent in user space and in the kernel on the processes' behalf.
type CPU struct{ User, System time.Duration }

// Sub is the CPU time spent between b and c.
func (c CPU) Sub(b CPU) CPU { return CPU{User: c.User - b.User, System: c.System - b.System} }

// Per divides c among n requests.
func (c CPU) Per(n int) CPU {
	return CPU{User: c.User / time.Duration(n), System: c.System / time.Duration(n)}
}

// CPUTime is the user and system CPU time the processes used so far, read from
// /proc/<pid>/stat (fields 14 and 15, after the parenthesised command name).
func CPUTime(pids ...int) (CPU, error) {
	var user, system int64
	for _, pid := range pids {
		fields, err := controlplane.StatFields(pid)
		if err != nil {
			return CPU{}, err
		}
		if len(fields) < 13 {
			return CPU{}, fmt.Errorf("/proc/%d/stat: %d fields after the command's name; want utime and stime (fields 14 and 15)", pid, len(fields))
		}
		// fields[0] is the state (field 3); utime and stime are fields 14 and 15.
		u, errU := strconv.ParseInt(fields[11], 10, 64)
		k, errK := strconv.ParseInt(fields[12], 10, 64)
		if errU != nil || errK != nil {
			return CPU{}, fmt.Errorf("/proc/%d/stat: utime %q, stime %q are not numbers", pid, fields[11], fields[12])
		}
		user, system = user+u, system+k
	}
	return CPU{User: TicksToDuration(user), System: TicksToDuration(system)}, nil
}

// TicksToDuration is a count of /proc's clock ticks (USER_HZ) as a duration.
func TicksToDuration(ticks int64) time.Duration {
	return time.Duration(ticks) * time.Second / clockTicks
}

// Family is a process and its children (nginx's master and its workers).
func Family(pid int) []int {
	return append([]int{pid}, controlplane.Children(pid)...)
}

// Counters are the driver's own figures from its /metrics: allocations and the reviews it
// sent to the API server.
type Counters struct{ Mallocs, TokenReviews, AccessReviews float64 }

// Scrape reads Counters from the driver's metrics listener.
func Scrape(metricsAddr string) (Counters, error) {
	m, err := ScrapeAll(metricsAddr)
	if err != nil {
		return Counters{}, err
	}
	return Counters{Mallocs: m["go_memstats_mallocs_total"], TokenReviews: m["connectors_tokenreviews_total"],
		AccessReviews: m["connectors_subjectaccessreviews_total"]}, nil
}

// ScrapeAll reads every sample of the driver's /metrics, the series of one name summed.
func ScrapeAll(metricsAddr string) (map[string]float64, error) {
	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	out := map[string]float64{}
	for sc := bufio.NewScanner(res.Body); sc.Scan(); {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		name, _, _ := strings.Cut(series, "{")
		out[name] += v
	}
	return out, nil
}
