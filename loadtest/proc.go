package loadtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/lockreactor/dflockd/reactor"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is one reading of a process's CPU time and resident memory.
type ProcSample struct {
	CPU time.Duration // utime + stime
	RSS int64         // bytes
}

// ReadProc reads /proc/PID/stat (utime + stime) and /proc/PID/status
// (VmRSS).
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	s.CPU = time.Duration(ut+st) * time.Second / clockTicks
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range bytes.Split(st2, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte(" kB"))), 10, 64)
			if err == nil {
				s.RSS = kb << 10
			}
		}
	}
	return s, nil
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CPUStats is the CPU cost of a run: the server's (from /proc, when its
// PIDs are known) and the load generator's own.
type CPUStats struct {
	// ServerCPU is the servers' CPU time during the run (s); 0 when no
	// --server-pid was given.
	ServerCPU float64 `json:"server_cpu_s,omitempty"`
	// ServerUsPerReq is server CPU per wire request (µs).
	ServerUsPerReq float64 `json:"server_cpu_us_per_request,omitempty"`
	// ServerCores is the average number of cores the server kept busy.
	ServerCores float64 `json:"server_cores,omitempty"`
	// ServerRSSBefore/After are the servers' resident memory (bytes).
	ServerRSSBefore int64 `json:"server_rss_before_bytes,omitempty"`
	ServerRSSAfter  int64 `json:"server_rss_after_bytes,omitempty"`
	// GenCPU is the load generator's CPU time (s) and GenUsPerReq per
	// request (µs): when the generator uses as much CPU as the server on a
	// shared machine, throughput is bounded by both.
	GenCPU      float64 `json:"generator_cpu_s"`
	GenUsPerReq float64 `json:"generator_cpu_us_per_request,omitempty"`
	GenCores    float64 `json:"generator_cores"`
	// PIDErr tells why server figures are missing (a PID that is gone).
	PIDErr string `json:"server_pid_error,omitempty"`
}

// cpuMeter measures CPU over one run.
type cpuMeter struct {
	pids   []int
	start  []ProcSample
	self   time.Duration
	t0     time.Time
	errMsg string
}

func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, self: selfCPU(), t0: time.Now()}
	for _, p := range pids {
		s, err := ReadProc(p)
		if err != nil && m.errMsg == "" {
			m.errMsg = err.Error()
		}
		m.start = append(m.start, s)
	}
	return m
}

// stop ends the measurement; requests is the number of wire requests the
// run made.
func (m *cpuMeter) stop(requests int64) *CPUStats {
	wall := time.Since(m.t0).Seconds()
	st := &CPUStats{GenCPU: (selfCPU() - m.self).Seconds(), PIDErr: m.errMsg}
	if wall > 0 {
		st.GenCores = st.GenCPU / wall
	}
	if requests > 0 {
		st.GenUsPerReq = st.GenCPU * 1e6 / float64(requests)
	}
	if len(m.pids) == 0 || m.errMsg != "" {
		return st
	}
	for i, p := range m.pids {
		s, err := ReadProc(p)
		if err != nil {
			st.PIDErr = err.Error()
			return st
		}
		st.ServerCPU += (s.CPU - m.start[i].CPU).Seconds()
		st.ServerRSSBefore += m.start[i].RSS
		st.ServerRSSAfter += s.RSS
	}
	if wall > 0 {
		st.ServerCores = st.ServerCPU / wall
	}
	if requests > 0 {
		st.ServerUsPerReq = st.ServerCPU * 1e6 / float64(requests)
	}
	return st
}

// RaiseNoFile lifts this process's open-file soft limit to its hard limit
// and returns the soft limit now in force (0 if it cannot be read).
func RaiseNoFile() uint64 {
	n, _ := reactor.RaiseNoFile()
	return n
}
