package records

import "testing"

func TestSaveLoadDelete(t *testing.T) {
	s, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{VolumeID: "../../etc/x", TargetPath: "/t", Pod: Pod{Namespace: "ns", Name: "p"}, Connectors: []string{"ns/git"}}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(r.VolumeID)
	if err != nil || got == nil || got.Pod.Name != "p" || got.Connectors[0] != "ns/git" {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	if err := s.Delete(r.VolumeID); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(r.VolumeID); got != nil || err != nil {
		t.Fatalf("after Delete: %+v, %v", got, err)
	}
	if err := s.Delete(r.VolumeID); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}
