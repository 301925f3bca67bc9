package objectcache

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestAListAgainIsNotOlderThanWhatWasSeen: the first list of an object is consistent; a list
// again, after its watch ended (an API server restarted: every follower of every node lists at
// once), asks for a version not older than the one seen last, which the watch cache serves as
// it is.
func TestAListAgainIsNotOlderThanWhatWasSeen(t *testing.T) {
	var asked []metav1.ListOptions
	recording := interceptor.NewClient(fakeConnectors(t, 1), interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			o := &client.ListOptions{}
			o.ApplyOptions(opts)
			asked = append(asked, *o.Raw)
			return c.List(ctx, list, opts...)
		}})
	f := testFollower(recording, nil)
	for _, seen := range []string{"", "42"} {
		if _, err := f.list(context.Background(), seen); err != nil {
			t.Fatal(err)
		}
	}
	if len(asked) != 2 || asked[0].ResourceVersion != "" || asked[1].ResourceVersion != "42" ||
		asked[1].ResourceVersionMatch != metav1.ResourceVersionMatchNotOlderThan || asked[1].FieldSelector != "metadata.name=c-0" {
		t.Errorf("lists asked %+v: want a consistent one, then one not older than 42, both of the name", asked)
	}
}

// TestAWatchThatCannotStartBacksOff: a watch that cannot start (the API server away) is tried
// again after waits that grow (followBackoff's, jittered), not every second as client-go's
// RetryWatcher would alone; one that starts resets them.
func TestAWatchThatCannotStartBacksOff(t *testing.T) {
	const failures = 3
	attempts := 0
	away := interceptor.NewClient(fakeConnectors(t, 1), interceptor.Funcs{
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			if attempts++; attempts <= failures {
				return nil, errors.New("connection refused")
			}
			return c.Watch(ctx, list, opts...)
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	f := testFollower(away, func(_ context.Context, d time.Duration) error {
		if waits = append(waits, d); len(waits) == failures {
			time.AfterFunc(2*time.Second, cancel) // once the next attempt started
		}
		return nil
	})
	_, _ = f.watchFrom(ctx, "1") // the fake client's lists name no resource version
	if len(waits) != failures {
		t.Fatalf("%d waits for %d failed attempts: %v", len(waits), failures, waits)
	}
	base := followBackoff.Duration
	for i, d := range waits {
		if d < base || d > 2*base {
			t.Errorf("wait %d: %v, want between %v and %v (doubling, jittered)", i, d, base, 2*base)
		}
		base *= 2
	}
}

// TestAWatchThatEndedStartsAgainSpread: a watch that ended (an API server restarted: every
// watch it served, of every node, at once) starts again after a wait at random within
// followSpread, not at once; its first start waits for nothing.
func TestAWatchThatEndedStartsAgainSpread(t *testing.T) {
	const ends = 3
	attempts := 0
	ending := interceptor.NewClient(fakeConnectors(t, 1), interceptor.Funcs{
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			attempts++
			w := watch.NewFake()
			if attempts <= ends {
				w.Stop() // ends at once, cleanly
			}
			return w, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	f := testFollower(ending, func(_ context.Context, d time.Duration) error {
		if waits = append(waits, d); len(waits) == ends {
			time.AfterFunc(2*time.Second, cancel)
		}
		return nil
	})
	_, _ = f.watchFrom(ctx, "1")
	if attempts <= ends {
		t.Fatalf("%d watch attempts, want more than %d", attempts, ends)
	}
	if len(waits) != ends {
		t.Fatalf("%d waits before %d attempts after a watch ended: %v", len(waits), attempts-1, waits)
	}
	for i, d := range waits {
		if d < 0 || d >= followSpread {
			t.Errorf("wait %d: %v, want within %v", i, d, followSpread)
		}
	}
}

// testFollower follows Connector c-0 through c, its waits told to pause (nil: timers).
func testFollower(c client.WithWatch, pause func(context.Context, time.Duration) error) follower {
	return follower{client: c, nn: nameOf(0), kind: "Connector", newList: func() client.ObjectList { return &v1alpha1.ConnectorList{} },
		set: func(client.Object) {}, listed: func() {}, pause: pause}
}

// TestOnlyAGoneWatchListsNotOlderThanWhatWasSeen: a watch that ended with 410 Gone lists again
// not older than the version it saw (older than the watch cache, which serves it at once); one
// that ended otherwise (a 403 at its start) lists consistently: the version it saw may be
// etcd's, from a consistent list, which the watch cache has not reached and would wait for.
func TestOnlyAGoneWatchListsNotOlderThanWhatWasSeen(t *testing.T) {
	for name, tc := range map[string]struct {
		refusal error  // at the watch's start; nil: 410 Gone in its stream
		want    string // the list again's resource version/match
	}{
		"forbidden": {apierrors.NewForbidden(v1alpha1.GroupVersion.WithResource("connectors").GroupResource(), "c-0", errors.New("no")), "/"},
		"gone":      {nil, "7/NotOlderThan"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		var lists []string
		watches := 0
		c := interceptor.NewClient(fakeConnectors(t, 1), interceptor.Funcs{
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				o := &client.ListOptions{}
				o.ApplyOptions(opts)
				if lists = append(lists, o.Raw.ResourceVersion+"/"+string(o.Raw.ResourceVersionMatch)); len(lists) == 2 {
					cancel()
				}
				err := c.List(ctx, list, opts...)
				list.SetResourceVersion("7") // the fake client's lists name none
				return err
			},
			Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
				if watches++; watches > 1 {
					return c.Watch(ctx, list, opts...)
				}
				if tc.refusal != nil {
					return nil, tc.refusal
				}
				gone := watch.NewFake()
				go gone.Error(&apierrors.NewResourceExpired("too old").ErrStatus)
				return gone, nil
			}})
		f := testFollower(c, func(context.Context, time.Duration) error { return nil })
		done := make(chan struct{})
		go func() { f.run(ctx, ""); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			cancel()
			t.Fatalf("%s: the follower did not list again: %q", name, lists)
		}
		if len(lists) < 2 || lists[1] != tc.want {
			t.Errorf("%s: lists %q, want the second %q", name, lists, tc.want)
		}
	}
}
