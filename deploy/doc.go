// Package deploy holds no code. Its tests check the deployment kit beside
// them: the Kubernetes manifests (rendered with kustomize, decoded strictly
// into the Kubernetes API types, checked for the invariants a platform team
// relies on), the monitoring objects, and the tokenproxy configs they carry.
//
// It is a module of its own so that the main module's dependencies, and
// `go install` of tokenproxy, do not carry the Kubernetes and kustomize
// libraries these tests need. scripts/test.sh runs it.
package deploy
