// Command connectors-csi is the Connectors CSI node plugin, proxy and controllers in one binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

func main() {
	// A child the controller started to evaluate a tenant's state.rego: it serves and exits.
	regoeval.ServeSandboxIfChild()
	fs := flag.NewFlagSet("connectors-csi", flag.ExitOnError)
	klog.InitFlags(fs)
	var opts driver.Options
	opts.BindFlags(fs)
	version := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *version {
		fmt.Println(driver.Version)
		return
	}
	ctx, stop := signal.NotifyContext(klog.NewContext(context.Background(), klog.Background()), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := driver.Run(ctx, opts); err != nil {
		klog.ErrorS(err, "Driver failed")
		os.Exit(1)
	}
}
