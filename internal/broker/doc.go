// Package broker owns the token cache: one Cache per upstream holds the
// current access token, fetches a new one once however many callers wait,
// refreshes it in the background before it expires, backs off when the
// vendor's token endpoint fails, bounds 401-driven re-mints, and never
// hands out an expired token.
//
// # One replica
//
// A Cache runs at most one fetch at a time (a flight); callers that find
// no valid token join it. The refresher starts a fetch at RefreshFraction of
// a token's life (with up to 10% jitter earlier), after a backoff, or when
// the credentials change. A 401 from the API drops the token of that
// generation only (Invalidate), unless the token was minted by or after the
// last 401-driven re-mint and ReauthMinInterval has not passed since it: then
// the 401 goes back to the caller (TestReauthBoundedPerInterval,
// TestReauthOlderTokenReplaysWithNewer).
//
// # A fleet of replicas (Options.Sharing, CONTRACT.md §7)
//
// With Sharing, a fetch asks the fleet's store (a sharing.Store, Vault KV v2
// in production) before the vendor. The store holds one record per upstream:
// the token, its expiry and stored refresh point, the refresh token, the
// credential version, a generation, the minting lease (holder, deadline),
// the fleet's last 401-driven re-mint, and the fleet's backoff after a
// failed mint. Every write is a check-and-set on the version read.
//
// A fetch reads the record and, in this order:
//
//  0. the record was written for another audience (Sharing.Audience: the
//     upstream's type, token endpoint, API origin; a record that names
//     none, empty or of the previous format, matches any): never use its
//     token, never write the record; log an ERROR naming the upstream and
//     what differs, show it in /status (last_error), and mint alone, as
//     with the store unavailable (counted local);
//  1. refused generation still stored (its number and its token: numbers
//     alone may repeat), within the fleet's reauth interval:
//     keep it (the 401 goes back to the caller);
//  2. a valid token minted from our credential version (or a newer one),
//     not refused, before its refresh point: use it (hit, or waited if we
//     waited for it);
//  3. minted from credentials newer than ours: use it while valid, else
//     wait; never mint from older credentials. "Newer" is
//     secrets.CompareFleet: a version of the same Vault path written later
//     (created_time; the number restarts when the path is deleted and
//     written again). Anything else that is not the same version (another
//     path, a fingerprint, a bare number from a record of the previous
//     format) is another lineage: not usable, and not newer, so we go on to mint
//     from our own credentials (any change counts as newer, from the
//     replica that sees it);
//  4. the fleet is backing off after a failed mint from our version: keep
//     what is valid, else answer the stored error;
//  5. another replica holds an unexpired lease: keep what is valid (the
//     record's token or ours), else wait, re-reading, at most FetchTimeout,
//     then answer 503 with Retry-After = the lease time left;
//  6. otherwise take the lease (check-and-set: holder = us, deadline = now +
//     Lease), ask the vendor (with the stored refresh token, if from our
//     version and unexpired: only a lease holder presents it), and write the
//     token back with generation+1 (over an empty record: past the store
//     version and every generation we hold) and the lease cleared (check-and-set on
//     the lease's version). A failed mint writes the lease back cleared with
//     the fleet's backoff, and drops a refused refresh token.
//
// The store unreachable (or not KV v2, or silent: every store call is
// bounded by FetchTimeout): a valid held token is kept, the store retried
// with backoff; once the held token is past its safety margin, Local mints
// alone (not written back) or the caller gets 503. The next fetch after the
// store answers again goes through it (TestSharedStoreUnavailable,
// TestSharedHungStoreBoundedByFetchTimeout).
//
// The store refusing access (sharing.ErrDenied, Vault's 403: a policy
// without read, create or update on the record, or a path outside it) takes
// the same path, since the replica cannot share either way, but it is a
// configuration error: logged at ERROR with the path and the capability,
// shown in /status (last_error), counted error (besides local when it
// mints alone), and never a reason to leave service (readiness follows the
// token held, as always) (TestSharedStoreDeniedIsAConfigurationError,
// TestFleetStoreOutsideThePolicy). Under a policy with create but not
// update, the first replica's lease write creates the record and its
// write-back is refused: its lease stays until its deadline, and the
// others wait for it (503 while they hold no token) before they too find
// every write refused and mint alone.
//
// Replicas wake for a refresh a little apart after the stored refresh point
// (up to 2s or a tenth of the time left); the first takes the lease and the
// others, finding it held, keep the valid token and read again within a
// second (TestSharedRefreshOncePerLifetime).
//
// # Races, and the test that covers each
//
//   - Two replicas take the lease at once: both read version n and write
//     with cas=n; the store accepts one. The loser reads again, finds the
//     lease held, waits, and uses the winner's token
//     (TestSharedColdStartMintsOnce: 5 replicas × 100 callers, 1 mint).
//   - The holder dies after minting, before writing: its lease stays until
//     its deadline; the others keep a valid token or wait (503 with the lease
//     time left as Retry-After), and once the deadline passes one takes the
//     lease over with a check-and-set on the dead holder's record, without
//     backoff (TestSharedDeadHolderLeasePassesOn). A refresh token the dead
//     holder used is lost with it: the successor's refresh is refused and it
//     falls back to the primary grant (CONTRACT.md §7's one exception).
//   - A slow writer whose lease ran out: another replica took the lease
//     (which changed the version), so the slow writer's check-and-set fails
//     and the newer token is never overwritten; the slow writer reads again
//     and uses the fleet's token, or its own alone if the store has none
//     valid (TestSharedSlowWriterNeverOverwrites).
//   - A refresh racing a 401: a replica refused generation g asks for a
//     token that is not g. If another replica is refreshing, it waits for
//     the new generation; if g is still stored and the fleet re-minted
//     within the interval, the 401 goes back to the caller; else it re-mints
//     under the lease (TestSharedRefreshRacing401, TestSharedReauthFleetWide).
//     Within one replica, a fetch that started before the 401 and comes back
//     with g does not install it: it asks again with g refused
//     (TestSharedRefusedDuringFlightIsNotInstalled).
//   - A rotation seen by one replica before the others: it finds a record
//     from an older version, mints from the new one under the lease, and
//     writes it. The others, still on the old version, find a newer version
//     stored and use that token; they never mint from the older credentials
//     (versions of one Vault secret order; fingerprints of file: and env:
//     sources have no order, so any difference counts as newer)
//     (TestSharedRotationSeenByOneFirst).
//   - The secret deleted (`vault kv metadata delete`) and written again,
//     its versions numbered from 1, or moved to another path by a reload.
//     Numbers compared alone said "version 1 is older than the stored 3":
//     every replica waited for a version it would never read, for good. A
//     fleet version carries the path and the version's created_time;
//     versions of one path order by created_time, whatever their numbers.
//     The first replica to read the re-created secret mints; the others,
//     still on the deleted one, are behind: they use that token and never
//     mint from the deleted secret, even at their refresh point before
//     their next read (when the deleted and re-created versions compared as
//     another lineage, such a replica minted from the deleted secret over
//     the new token: 3 mints instead of 1, seen by a tester)
//     (TestSharedCredentialsRecreatedOrMoved,
//     TestFleetCredentialsRecreatedOrMoved). Another path is another
//     lineage: replicas on different paths at once (a reload reaching some
//     replicas first) each mint in turn at their fetches, as file: sources
//     do, until all read the same secret. A record written before fleet
//     versions carried a path holds a bare number: another lineage, one
//     mint replaces it (TestSharedRecordOfPreviousFormat). Versions are
//     ordered without the secret's metadata (the policy grants none), on
//     Vault's clock: a Vault whose clock stepped back between two writes of
//     one path orders them the wrong way until each replica reads the
//     newest.
//   - Two configs giving one upstream name to different vendors on one
//     sharing path: whichever group writes the record first keeps it; a
//     replica of the other group finds another audience, never uses the
//     token and never writes the record (so neither group overwrites the
//     other's in turn), and mints alone at each fetch. A mint that lost
//     its lease takes the fleet's newer token only if its audience matches
//     (TestSharedTokenNeverCrossesAudiences, both orders;
//     TestFleetUpstreamNameOfAnotherVendor).
//   - A record damaged (malformed) or deleted, then replaced by a mint:
//     the generations started again at 1, so a replica still holding the
//     old generation-1 token took its 401 for a refusal of the stored,
//     other, generation-1 token and re-minted over a good one. A mint over
//     an empty record continues past the store version read and past any
//     generation the minting replica holds or was refused; and a refusal
//     is of a generation and its token (compared in memory, never stored),
//     so a number given twice (the record's metadata deleted restarts the
//     store's versions) still never names the wrong token
//     (TestSharedGenerationNeverReused).
//   - Refresh tokens across the fleet: only the lease holder presents the
//     stored one, and every write stores the newest, so none is presented
//     twice (TestSharedRefreshTokenNeverPresentedTwice).
//   - A failed mint: the fleet's backoff is stored, so the other replicas do
//     not ask the vendor in turn (TestSharedFailureBacksOffFleet).
//
// Lease deadlines are wall-clock times: replicas' clocks are assumed within
// a second of each other, and Lease is at least twice FetchTimeout (config
// validation), so a holder that is alive mints and writes within its lease.
package broker
