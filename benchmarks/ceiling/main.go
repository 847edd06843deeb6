// Command ceiling measures what the apiserver's write path absorbs: the same no-op,
// precondition-guarded merge patches the operator sends, from an object list prepared before
// the clock starts, as fast as the apiserver answers. Every migrator in the benchmark is
// reported as a fraction of this figure.
//
// It prints one JSON document: objects, seconds, and outcomes by kind.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/clientcmd"
)

type target struct {
	resource  schema.GroupVersionResource
	namespace string
	name      string
	uid       types.UID
	version   string
}

type result struct {
	Objects   int     `json:"objects"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"objects_per_second"`
	Rewritten int64   `json:"rewritten"`
	Unchanged int64   `json:"unchanged"`
	Conflicts int64   `json:"conflicts"`
	Errors    int64   `json:"errors"`
	Workers   int     `json:"workers"`
}

// parseResource reads "group/version/resource", with an empty group for the core API ("/v1/secrets").
func parseResource(text string) (schema.GroupVersionResource, error) {
	parts := strings.Split(text, "/")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return schema.GroupVersionResource{}, fmt.Errorf("--resources: %q is not group/version/resource (core: /v1/secrets)", text)
	}
	return schema.GroupVersionResource{Group: parts[0], Version: parts[1], Resource: parts[2]}, nil
}

func listAll(ctx context.Context, client metadata.Interface, resource schema.GroupVersionResource, pageSize int64) ([]target, error) {
	var targets []target
	options := metav1.ListOptions{Limit: pageSize}
	for {
		page, err := client.Resource(resource).List(ctx, options)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", resource, err)
		}
		for _, item := range page.Items {
			targets = append(targets, target{resource, item.Namespace, item.Name, item.UID, item.ResourceVersion})
		}
		if page.Continue == "" {
			return targets, nil
		}
		options.Continue = page.Continue
	}
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	resources := flag.String("resources", "", "comma-separated group/version/resource list (core: /v1/secrets)")
	workers := flag.Int("workers", 64, "requests in flight")
	pageSize := flag.Int64("page-size", 500, "list page size while preparing (not timed)")
	flag.Parse()
	if err := run(*kubeconfig, *resources, *workers, *pageSize); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(2)
	}
}

func run(kubeconfig, resources string, workers int, pageSize int64) error {
	if resources == "" || workers < 1 {
		return fmt.Errorf("--resources is required and --workers must be at least 1")
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// No client-side throttling: the point is the apiserver's limit, not client-go's.
	config.QPS = -1
	config.Burst = -1
	client, err := metadata.NewForConfig(config)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var targets []target
	for _, text := range strings.Split(resources, ",") {
		resource, err := parseResource(text)
		if err != nil {
			return err
		}
		found, err := listAll(ctx, client, resource, pageSize)
		if err != nil {
			return err
		}
		targets = append(targets, found...)
	}

	var out result
	out.Objects, out.Workers = len(targets), workers
	queue := make(chan target)
	var group sync.WaitGroup
	started := time.Now()
	for range workers {
		group.Add(1)
		go func() {
			defer group.Done()
			for t := range queue {
				patch, _ := json.Marshal(map[string]any{
					"metadata": map[string]any{"uid": t.uid, "resourceVersion": t.version},
				})
				var err error
				var answer *metav1.PartialObjectMetadata
				if t.namespace != "" {
					answer, err = client.Resource(t.resource).Namespace(t.namespace).Patch(ctx, t.name, types.MergePatchType, patch, metav1.PatchOptions{})
				} else {
					answer, err = client.Resource(t.resource).Patch(ctx, t.name, types.MergePatchType, patch, metav1.PatchOptions{})
				}
				switch {
				case apierrors.IsConflict(err):
					atomic.AddInt64(&out.Conflicts, 1)
				case err != nil:
					atomic.AddInt64(&out.Errors, 1)
				case answer.ResourceVersion != t.version:
					atomic.AddInt64(&out.Rewritten, 1)
				default:
					atomic.AddInt64(&out.Unchanged, 1)
				}
			}
		}()
	}
	for _, t := range targets {
		queue <- t
	}
	close(queue)
	group.Wait()
	out.Seconds = time.Since(started).Seconds()
	if out.Seconds > 0 {
		out.PerSecond = float64(out.Objects) / out.Seconds
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
