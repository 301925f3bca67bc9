package connectorsapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	gittransport "github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

// List is the list format of the custom APIs (SPEC §5.3).
type List struct {
	ListMeta ListMeta `json:"listMeta"`
	Items    []Item   `json:"items"`
}

// ListMeta counts the items that matched, before paging.
type ListMeta struct {
	TotalItems int `json:"totalItems"`
}

// Item is one listed object.
type Item struct {
	Name   string `json:"name"`
	Commit string `json:"commit,omitempty"`
}

// toolTimeout bounds one custom API call to a tool.
const toolTimeout = 30 * time.Second

// defaultPageSize is the page size when itemsPerPage is not given.
const defaultPageSize = 100

// page filters items by the search query, sorts them by name and cuts the requested page.
func page(r *http.Request, items []Item) (*List, error) {
	q := r.URL.Query()
	if search := q.Get("search"); search != "" {
		items = slices.DeleteFunc(items, func(it Item) bool { return !strings.Contains(it.Name, search) })
	}
	slices.SortFunc(items, func(a, b Item) int { return strings.Compare(a.Name, b.Name) })
	num := func(key string, def int) (int, error) {
		v := q.Get(key)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "%s=%q is not a positive number", key, v)
		}
		return n, nil
	}
	pageNo, err := num("page", 1)
	if err != nil {
		return nil, err
	}
	size, err := num("itemsPerPage", defaultPageSize)
	if err != nil {
		return nil, err
	}
	out := &List{ListMeta: ListMeta{TotalItems: len(items)}, Items: []Item{}}
	if start := (pageNo - 1) * size; start < len(items) {
		out.Items = items[start:min(start+size, len(items))]
	}
	return out, nil
}

// underAddress checks that a URL given by the caller is one of the Connector's, so that the API
// never sends the credential elsewhere, and a repository's: no user information, query or
// fragment, nor a '?' or '#' escaped in its path, which go-git decodes into the URL it asks
// (repositoryUrl=<address>/api/v4/projects/1/triggers%3F sent a GET of the triggers, with the
// credential, whatever the list appends).
func underAddress(c *v1alpha1.Connector, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "%q is not a URL", raw)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(u.Path, "?#"):
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest,
			"repositoryUrl must be a repository's URL, without user information, query or fragment")
	}
	base, err := url.Parse(c.Spec.Address)
	if err != nil || !proxy.Covers(base, u) {
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest,
			"repositoryUrl %q is not under the Connector's address %s", raw, c.Spec.Address)
	}
	return u, nil
}

// gitRefs lists a repository's branches and tags from its smart-HTTP ref advertisement.
func (s *Server) gitRefs(r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) (*List, error) {
	repo := r.URL.Query().Get("repositoryUrl")
	if repo == "" {
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "repositoryUrl is required")
	}
	repoURL, err := underAddress(c, repo)
	if err != nil {
		return nil, err
	}
	var refs []Item
	err = s.withUpstream(r, u, c, class, func(ctx context.Context, up *proxy.Upstream) (err error) {
		refs, err = listRefs(ctx, repoURL.String(), up)
		return err
	})
	if err != nil {
		return nil, err
	}
	return page(r, refs)
}

// listRefs asks a Git server for its refs with go-git, over the Connector's transport and
// following no redirect: go-git's own client would follow the first one with the credential.
func listRefs(ctx context.Context, repo string, up *proxy.Upstream) ([]Item, error) {
	ep, err := gittransport.NewEndpoint(repo)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "repositoryUrl %q: %v", repo, err)
	}
	var auth gittransport.AuthMethod
	switch {
	case up.Token != "":
		auth = &githttp.TokenAuth{Token: up.Token}
	case up.Username != "":
		auth = &githttp.BasicAuth{Username: up.Username, Password: up.Password}
	}
	client := githttp.NewClientWithOptions(&http.Client{Transport: up.Transport, CheckRedirect: egress.NoRedirects},
		&githttp.ClientOptions{RedirectPolicy: githttp.NoFollowRedirects})
	session, err := client.NewUploadPackSession(ep, auth)
	if err != nil {
		return nil, toolError("Git server", err)
	}
	defer session.Close()
	adv, err := session.AdvertisedReferencesContext(ctx)
	if err != nil {
		return nil, toolError("Git server", err)
	}
	refs, err := adv.AllReferences()
	if err != nil {
		return nil, toolError("Git server", err)
	}
	items := make([]Item, 0, len(refs))
	for _, ref := range refs {
		n := ref.Name()
		if (n.IsBranch() || n.IsTag()) && ref.Type() == plumbing.HashReference && !ref.Hash().IsZero() {
			items = append(items, Item{Name: n.String(), Commit: ref.Hash().String()})
		}
	}
	return items, nil
}

// withUpstream runs call with the Connector's credential and transport, bounded by toolTimeout
// and in what it reads (AnswerLimits). A failure to resolve the credential, and a read past
// a bound, come back as an *apiError, untouched by the callers' tool-error mapping.
func (s *Server) withUpstream(r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, call func(context.Context, *proxy.Upstream) error) error {
	up, err := s.Proxy.Upstream(r.Context(), c, class, u)
	if err != nil {
		return credentialError(err)
	}
	budget, held := r.Context().Value(callBudgetKey{}).(*callBudget)
	if !held {
		budget = s.answerLimits().newCall(proxy.CallerOf(u))
		defer budget.release()
	}
	up.Transport = budget.transport(up.Transport)
	ctx, cancel := context.WithTimeout(r.Context(), toolTimeout)
	defer cancel()
	err = call(ctx, up)
	if over := budget.over(); over != nil {
		return over
	}
	return err
}

// callBudgetKey holds, in a built-in list's request context, the budget of its call (custom).
type callBudgetKey struct{}

func (s *Server) answerLimits() *AnswerLimits {
	if s.Answers == nil {
		return defaultAnswerLimits
	}
	return s.Answers
}

// credentialError names a Connector whose credential cannot be resolved.
func credentialError(err error) error {
	if code, msg := proxy.Status(err); code != 0 {
		return errorf(code, reasonFor(code), "%s", msg)
	}
	return errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "%v", err)
}

// named makes list items of names.
func named(names []string) []Item {
	items := make([]Item, len(names))
	for i, n := range names {
		items[i] = Item{Name: n}
	}
	return items
}

// toolError turns a client error into a Status a person can act on.
func toolError(tool string, err error) error {
	var terr *transport.Error
	var ae *apiError // the API's own (a bound of what it reads), in its own words
	switch {
	case errors.As(err, &ae):
		return ae
	// Not go-git's message: it quotes the tool's answer whole, to a path the caller chose
	// (repositoryUrl), read with the Connector's credential.
	case errors.Is(err, gittransport.ErrAuthenticationRequired):
		return errorf(http.StatusBadGateway, "BadGateway", "the %s rejected the Connector's credential (401)", tool)
	case errors.Is(err, gittransport.ErrAuthorizationFailed):
		return errorf(http.StatusBadGateway, "BadGateway", "the %s rejected the Connector's credential (403)", tool)
	case errors.Is(err, gittransport.ErrRepositoryNotFound):
		return errorf(http.StatusNotFound, metav1.StatusReasonNotFound, "the %s has no such repository", tool)
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return errorf(http.StatusBadGateway, "BadGateway", "the %s rejected the Connector's credential (%d)", tool, terr.StatusCode)
	case egress.IsRefused(err):
		return errorf(http.StatusForbidden, metav1.StatusReasonForbidden, "the %s cannot be asked: %v", tool, refusedPart(err))
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusGatewayTimeout, metav1.StatusReasonTimeout, "the %s did not answer within %s", tool, toolTimeout)
	}
	// Neither library's message goes on whole: go-containerregistry's quotes a token service's
	// body (a refresh token, a token under a key it does not know), go-git's the tool's answer.
	var uerr *url.Error
	var nerr interface{ Timeout() bool }
	if errors.As(err, &uerr) || errors.As(err, &nerr) {
		return errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "the %s is unreachable: %s", tool, proxy.UpstreamFailure(err))
	}
	if terr != nil {
		return errorf(http.StatusBadGateway, "BadGateway", "the %s answered %d", tool, terr.StatusCode)
	}
	return errorf(http.StatusBadGateway, "BadGateway", "the %s gave an answer that could not be read", tool)
}

// registryOptions are go-containerregistry options with the Connector's credential: the library
// runs the registry's token flow itself and follows Link pagination.
func (s *Server) registryOptions(ctx context.Context, up *proxy.Upstream) []remote.Option {
	var auth authn.Authenticator = authn.Anonymous
	if up.Username != "" {
		auth = &authn.Basic{Username: up.Username, Password: up.Password}
	} else if up.Token != "" {
		auth = &authn.Bearer{Token: up.Token}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(up.Transport)}
	if s.RegistryPageSize > 0 {
		opts = append(opts, remote.WithPageSize(s.RegistryPageSize))
	}
	return opts
}

func registryName(c *v1alpha1.Connector) (name.Registry, error) {
	u, err := url.Parse(c.Spec.Address)
	if err != nil || u.Host == "" {
		return name.Registry{}, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "Connector address %q is not a URL", c.Spec.Address)
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	return name.NewRegistry(u.Host, opts...)
}

// repositories lists the registry's repositories from its v2 catalog.
func (s *Server) repositories(r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) (*List, error) {
	reg, err := registryName(c)
	if err != nil {
		return nil, err
	}
	var repos []string
	err = s.withUpstream(r, u, c, class, func(ctx context.Context, up *proxy.Upstream) (err error) {
		repos, err = remote.Catalog(ctx, reg, s.registryOptions(ctx, up)...)
		return err
	})
	if err != nil {
		return nil, registryError(err)
	}
	return page(r, named(repos))
}

// tags lists a repository's tags.
func (s *Server) tags(r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) (*List, error) {
	repoName := r.URL.Query().Get("repository")
	if repoName == "" {
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "repository is required")
	}
	reg, err := registryName(c)
	if err != nil {
		return nil, err
	}
	repo, err := name.NewRepository(reg.Name()+"/"+repoName, nameOptions(reg)...)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "repository %q: %v", repoName, err)
	}
	var tags []string
	err = s.withUpstream(r, u, c, class, func(ctx context.Context, up *proxy.Upstream) (err error) {
		tags, err = remote.List(repo, s.registryOptions(ctx, up)...)
		return err
	})
	if err != nil {
		return nil, registryError(err)
	}
	return page(r, named(tags))
}

func nameOptions(reg name.Registry) []name.Option {
	if reg.Scheme() == "http" {
		return []name.Option{name.Insecure}
	}
	return nil
}

// registryError turns a go-containerregistry error into a Status.
func registryError(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return errorf(http.StatusBadGateway, "BadGateway", "the registry rejected the Connector's credential (%d)", terr.StatusCode)
		case http.StatusNotFound:
			return errorf(http.StatusNotFound, metav1.StatusReasonNotFound, "the registry has no such repository")
		}
	}
	return toolError("registry", err)
}

// refusedPart is the refusal inside err, without the client's wrapping (which repeats the URL).
func refusedPart(err error) error {
	var re *egress.RefusedError
	if errors.As(err, &re) {
		return re
	}
	return err
}
