//go:build race

package proxy

// raceEnabled: the race detector's sync.Pool drops a share of what is put back, at random,
// so allocation counts that rely on a pool do not hold under it.
const raceEnabled = true
