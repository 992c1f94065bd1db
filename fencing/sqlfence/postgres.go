package sqlfence

import "strings"

// SQLSTATEs of the errors that the PostgreSQL function <table>_admit raises.
const (
	// CodeStale is raised for a token older than the one recorded.
	CodeStale = "EL001"
	// CodeLockMismatch is raised for a token of another lock than the one
	// recorded.
	CodeLockMismatch = "EL002"
	// CodeInvalid (invalid_parameter_value) is raised for an empty
	// resource or a token that is not a grant's.
	CodeInvalid = "22023"
)

// pgFunction returns the DDL of <table>_admit(resource, token_key,
// revision), the PostgreSQL function that does what Admit does, for psql
// and other clients that are not Go. It returns the revision admitted, or
// raises an error with one of the Code SQLSTATEs, which aborts the
// transaction.
func pgFunction(table string) string {
	return strings.NewReplacer("{table}", table, "{invalid}", CodeInvalid, "{mismatch}", CodeLockMismatch, "{stale}", CodeStale).Replace(`CREATE OR REPLACE FUNCTION {table}_admit(p_resource text, p_token_key text, p_revision bigint)
RETURNS bigint LANGUAGE plpgsql AS $fence$
DECLARE
	p_lock text := substring(p_token_key from '^(.*/)[^/]+$');
	got bigint;
	rec_lock text;
	rec_rev bigint;
	rec_key text;
BEGIN
	IF p_resource IS NULL OR p_resource = '' THEN
		RAISE EXCEPTION 'etcdlock fence: empty resource' USING ERRCODE = '{invalid}';
	END IF;
	IF p_revision IS NULL OR p_revision <= 0 OR p_lock IS NULL THEN
		RAISE EXCEPTION 'etcdlock fence: token %@% is not a grant''s token (want $ETCDLOCK_TOKEN and $ETCDLOCK_KEY)',
			p_revision, p_token_key USING ERRCODE = '{invalid}';
	END IF;
	INSERT INTO {table} AS f (resource, lock_key, revision, token_key)
	VALUES (p_resource, p_lock, p_revision, p_token_key)
	ON CONFLICT (resource) DO UPDATE SET revision = excluded.revision, token_key = excluded.token_key
	WHERE f.revision <= excluded.revision AND f.lock_key = excluded.lock_key
	RETURNING f.revision INTO got;
	IF got IS NOT NULL THEN
		RETURN got;
	END IF;
	SELECT f.lock_key, f.revision, f.token_key INTO rec_lock, rec_rev, rec_key FROM {table} f WHERE f.resource = p_resource;
	IF rec_lock <> p_lock THEN
		RAISE EXCEPTION 'etcdlock fence: % is fenced by lock % (token %@%), not by %', p_resource, rec_lock, rec_rev, rec_key, p_lock
			USING ERRCODE = '{mismatch}';
	END IF;
	RAISE EXCEPTION 'etcdlock fence: stale token %@% for %: highest admitted is %', p_revision, p_token_key, p_resource, rec_rev
		USING ERRCODE = '{stale}';
END
$fence$`)
}
