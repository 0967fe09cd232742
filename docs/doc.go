// Package docs holds no code. Its tests check the repository's Markdown
// and scripts as a reader uses them in a clone: every relative link leads to
// a file in the repository, and no command shown writes a credential to
// Vault in a way that keeps a file's trailing newline.
package docs
