//! The schema, as an ordered list of migrations. A database records the
//! last one it has in `schema_version`; opening it applies the ones after,
//! each in its own transaction. Migrations are only ever appended: a
//! released one never changes, and the schema is never rebuilt.

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: inventory, tasks and events.
    r"
    CREATE TABLE host (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        facts TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE datastores (
        name TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        capacity_bytes INTEGER,
        free_bytes INTEGER,
        volumes INTEGER,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE switches (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE port_groups (
        name TEXT PRIMARY KEY,
        switch TEXT NOT NULL,
        config TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        vcpus INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        boot TEXT NOT NULL,
        driver TEXT NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE vm_disks (
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        datastore TEXT NOT NULL,
        volume TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        export_id TEXT NOT NULL,
        PRIMARY KEY (vm_id, idx)
    );
    CREATE TABLE vm_nics (
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        port_group TEXT NOT NULL,
        mac TEXT NOT NULL,
        port TEXT NOT NULL,
        PRIMARY KEY (vm_id, idx)
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        result TEXT,
        error TEXT,
        user TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        severity TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        message TEXT NOT NULL,
        user TEXT
    );
    ",
    // 2: users, login sessions and API tokens.
    r"
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('administrator', 'read-only')),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
    );
    ",
    // 3: performance samples (every 20 s, kept an hour) and their 5-minute
    // rollups (kept a day), per object (host, vm, volume, port) and metric.
    r"
    CREATE TABLE metric_samples (
        kind TEXT NOT NULL,
        object TEXT NOT NULL,
        metric TEXT NOT NULL,
        time INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (kind, object, metric, time)
    ) WITHOUT ROWID;
    CREATE INDEX metric_samples_time ON metric_samples (time);
    CREATE TABLE metric_rollups (
        kind TEXT NOT NULL,
        object TEXT NOT NULL,
        metric TEXT NOT NULL,
        time INTEGER NOT NULL,
        avg REAL NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        samples INTEGER NOT NULL,
        PRIMARY KEY (kind, object, metric, time)
    ) WITHOUT ROWID;
    CREATE INDEX metric_rollups_time ON metric_rollups (time);
    ",
    // 4: why a VM got its hypervisor driver (sfera-vmm or QEMU).
    r"
    ALTER TABLE vms ADD COLUMN driver_reason TEXT NOT NULL DEFAULT '';
    ",
    // 5: when each login session was last used (for the idle timeout), and
    // indexes for pruning old events and tasks.
    r"
    ALTER TABLE sessions ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET last_seen_at = created_at;
    CREATE INDEX events_time ON events (time);
    CREATE INDEX tasks_finished_at ON tasks (finished_at);
    ",
    // 6: users and API tokens are the cluster's (etcd): a session names
    // its user without a foreign key into this host's users table, which
    // is emptied once its rows have moved.
    r"
    CREATE TABLE sessions_v6 (
        token_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO sessions_v6 (token_hash, user, created_at, expires_at, last_seen_at)
        SELECT token_hash, user, created_at, expires_at, last_seen_at FROM sessions;
    DROP TABLE sessions;
    ALTER TABLE sessions_v6 RENAME TO sessions;
    CREATE INDEX sessions_user ON sessions (user);
    ",
];
