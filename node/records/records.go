// Package records persists a small record per published volume under the plugin's state
// directory, so that unpublish, and a driver that restarted, know what a volume holds and what
// to revoke.
package records

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrUnreadable is a record whose file is there and not JSON: written in part before the node
// lost power (a rename can reach the disk before the data it names), or by another version.
var ErrUnreadable = errors.New("unreadable")

// Pod identifies the Pod a volume belongs to.
type Pod struct {
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	UID            string `json:"uid"`
	ServiceAccount string `json:"serviceAccount"`
}

// Record is what the driver remembers of one volume. It holds no token and no credential.
type Record struct {
	VolumeID   string   `json:"volumeID"`
	TargetPath string   `json:"targetPath"`
	Pod        Pod      `json:"pod"`
	Connectors []string `json:"connectors"`
	// AccessRequests are the AccessRequests whose grants this volume holds (namespace/name).
	AccessRequests []string `json:"accessRequests,omitempty"`
	// Rejected: the volume holds only the .error.json of a rejected AccessRequest.
	Rejected bool `json:"rejected,omitempty"`
	// Fingerprint identifies the inputs the volume was last rendered with (the attributes, the
	// Connectors' and classes' versions, the CA), AuthFingerprint those it was last authorized
	// with (the same but the classes and the CA), TokenSHA256 the token's hash, AuthorizedAt
	// when: an unchanged republish within the recheck interval needs no API call, and one whose
	// class or CA changed alone is rendered again without one.
	Fingerprint     string    `json:"fingerprint,omitempty"`
	AuthFingerprint string    `json:"authFingerprint,omitempty"`
	TokenSHA256     string    `json:"tokenSHA256,omitempty"`
	AuthorizedAt    time.Time `json:"authorizedAt,omitzero"`
	// Bytes is about the memory the volume's files hold (node's volumeBudget).
	Bytes int64 `json:"bytes,omitempty"`
}

// Store keeps records as one JSON file per volume, and in memory once read or written, so that
// kubelet's republish of every volume each minute does not read the disk.
type Store struct {
	dir    string
	mu     sync.Mutex
	memory map[string]*Record // by volume ID
}

// NewStore returns a Store in dir, creating it.
func NewStore(dir string) (*Store, error) {
	dir = filepath.Join(dir, "volumes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return &Store{dir: dir, memory: map[string]*Record{}}, nil
}

// path names a volume's file by a hash of its ID, so that no ID can escape the directory.
func (s *Store) path(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:16])+".json")
}

// Save writes a record atomically. The record must not be changed afterwards: Load hands it out.
func (s *Store) Save(r *Record) error {
	if err := s.write(r); err != nil {
		return err
	}
	s.mu.Lock()
	s.memory[r.VolumeID] = r
	s.mu.Unlock()
	return nil
}

func (s *Store) write(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.path(r.VolumeID))
}

// Load returns the record of a volume, or nil when there is none. The record is shared: do not
// change it.
func (s *Store) Load(volumeID string) (*Record, error) {
	s.mu.Lock()
	r, ok := s.memory[volumeID]
	s.mu.Unlock()
	if ok {
		return r, nil
	}
	r, err := s.read(volumeID)
	if err == nil && r != nil {
		s.mu.Lock()
		s.memory[volumeID] = r
		s.mu.Unlock()
	}
	return r, err
}

func (s *Store) read(volumeID string) (*Record, error) {
	return readFile(s.path(volumeID))
}

// readFile reads the record in path, nil when there is none.
func readFile(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("volume record %s: %w: %v", path, ErrUnreadable, err)
	}
	return &r, nil
}

// All reads every record the store holds on disk: the volumes a restarted driver finds
// mounted. A record that cannot be read is left out, and named in the error.
func (s *Store) All() ([]*Record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []*Record
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		r, err := readFile(filepath.Join(s.dir, e.Name()))
		switch {
		case err != nil:
			errs = append(errs, err)
		case r != nil: // nil: removed meanwhile
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

// Delete removes a volume's record; a missing record is not an error.
func (s *Store) Delete(volumeID string) error {
	s.mu.Lock()
	delete(s.memory, volumeID)
	s.mu.Unlock()
	err := os.Remove(s.path(volumeID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
