// The shell: login, then the header, the inventory tree, the page of the
// route, and the tasks and events panes.

import { useEffect, useState } from 'preact/hooks';
import { ApiError, call, get, setUnauthorizedHandler } from './api';
import type { Session } from './api';
import { ErrorBox } from './components/common';
import { BottomPanes, EventTable, TaskTable } from './components/panes';
import { ProgressBar } from './components/progress';
import { Tree } from './components/tree';
import { PasswordPage, TokensPage } from './pages/account';
import { RolesPage, UsersPage } from './pages/admin';
import { HostPage } from './pages/host';
import { Login } from './pages/login';
import { NewVmPage } from './pages/new-vm';
import { PortGroupPage, PortPage, SwitchPage } from './pages/network';
import { DatastorePage, VolumePage } from './pages/storage';
import { VmPage } from './pages/vm';
import { useRoute } from './router';
import type { Route } from './router';
import { runningTasks, setSession, startPolling, stopPolling, useStore } from './store';

function Content({ route }: { route: Route }) {
  switch (route.page) {
    case 'host':
      return <HostPage />;
    case 'datastore':
      return <DatastorePage ds={route.ds} />;
    case 'volume':
      return <VolumePage ds={route.ds} volume={route.volume} />;
    case 'switch':
      return <SwitchPage sw={route.sw} />;
    case 'portgroup':
      return <PortGroupPage pg={route.pg} />;
    case 'port':
      return <PortPage port={route.port} />;
    case 'vm':
      return <VmPage name={route.vm} tab={route.tab} />;
    case 'new-vm':
      return <NewVmPage />;
    case 'tasks':
      return (
        <div>
          <h2>Tasks</h2>
          <TaskTable />
        </div>
      );
    case 'events':
      return (
        <div>
          <h2>Events</h2>
          <EventTable />
        </div>
      );
    case 'users':
      return <UsersPage />;
    case 'roles':
      return <RolesPage />;
    case 'tokens':
      return <TokensPage />;
    case 'password':
      return <PasswordPage />;
  }
}

export function App() {
  const [checked, setChecked] = useState(false);
  const s = useStore();
  const route = useRoute();

  useEffect(() => {
    setUnauthorizedHandler(() => {
      stopPolling();
      setSession(null);
    });
    get<Session>('/session')
      .then((who) => setSession(who))
      .catch((e) => {
        if (!(e instanceof ApiError && e.status === 401)) console.error(e);
      })
      .finally(() => setChecked(true));
  }, []);
  useEffect(() => {
    if (s.session) startPolling();
    return stopPolling;
  }, [s.session?.user]);

  if (!checked) return null;
  if (!s.session) return <Login onLogin={setSession} />;
  const busy = runningTasks();
  const logout = async () => {
    try {
      await call('DELETE', '/session');
    } catch {
      // Gone already.
    }
    stopPolling();
    setSession(null);
  };
  return (
    <div class="shell">
      <header class="topbar">
        <a class="brand" href="#/host">
          <span class="logo" aria-hidden="true" />
          Sfera
        </a>
        <span class="muted">{s.host ? `${s.host.hostname} · ${s.vms.filter((v) => v.state === 'running').length} of ${s.vms.length} VMs running` : ''}</span>
        <div class="busy" aria-live="polite">
          {busy.length > 0 && <ProgressBar value={null} label={`${busy.length} task${busy.length > 1 ? 's' : ''} running`} testid="busy" />}
        </div>
        <span class="user" data-testid="user">
          {s.session.user} <span class="muted">({s.session.role})</span>
        </span>
        <a class="topbar-link" href="#/admin/users" data-testid="top-admin">
          Administration
        </a>
        <a class="topbar-link" href="#/admin/password" data-testid="top-password">
          Change password
        </a>
        <button class="small" onClick={logout}>
          Log out
        </button>
      </header>
      <aside class="sidebar">
        <Tree route={route} />
      </aside>
      <main class="content">
        <ErrorBox error={s.error} />
        <Content route={route} />
      </main>
      <BottomPanes />
    </div>
  );
}
