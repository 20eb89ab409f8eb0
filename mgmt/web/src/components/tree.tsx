// The inventory tree: the host, its datastores, its switches with their
// port groups, its VMs, and the administration pages, each a link to its
// page.

import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { href } from '../router';
import type { Route } from '../router';
import { useStore } from '../store';

function Item({ to, icon, label, active, extra, testid }: { to: Route; icon: string; label: string; active: boolean; extra?: ComponentChildren; testid?: string }) {
  return (
    <a href={href(to)} class={`tree-item${active ? ' active' : ''}`} data-testid={testid} aria-current={active ? 'page' : undefined}>
      <span class={`icon icon-${icon}`} aria-hidden="true" />
      <span class="tree-label">{label}</span>
      {extra}
    </a>
  );
}

function Group({ label, children, count }: { label: string; children: ComponentChildren; count?: number }) {
  const [open, setOpen] = useState(true);
  return (
    <div class="tree-group">
      <button class="tree-toggle" aria-expanded={open} onClick={() => setOpen(!open)}>
        <span class={`caret${open ? ' open' : ''}`} aria-hidden="true" />
        {label}
        {count != null && <span class="count">{count}</span>}
      </button>
      {open && <div class="tree-children">{children}</div>}
    </div>
  );
}

export function Tree({ route }: { route: Route }) {
  const s = useStore();
  const is = (page: Route['page'], key?: string) => {
    if (route.page !== page) return false;
    if (key === undefined) return true;
    const r = route as Record<string, unknown>;
    return r.ds === key || r.sw === key || r.pg === key || r.vm === key;
  };
  const switches = s.networks?.switches ?? [];
  const groups = s.networks?.port_groups ?? [];
  return (
    <nav class="tree" aria-label="Inventory">
      <Item to={{ page: 'host' }} icon="host" label={s.host?.hostname ?? 'host'} active={is('host')} testid="tree-host" />
      <div class="tree-children">
        <Group label="Datastores" count={s.datastores.length}>
          {s.datastores.map((d) => (
            <Item key={d.name} to={{ page: 'datastore', ds: d.name }} icon="datastore" label={d.name} active={is('datastore', d.name) || (route.page === 'volume' && route.ds === d.name)} />
          ))}
        </Group>
        <Group label="Networks" count={groups.length}>
          {switches.map((sw) => (
            <div key={sw.name}>
              <Item to={{ page: 'switch', sw: sw.name }} icon="switch" label={sw.name} active={is('switch', sw.name)} />
              <div class="tree-children">
                {groups
                  .filter((g) => g.switch === sw.name)
                  .map((g) => (
                    <Item key={g.name} to={{ page: 'portgroup', pg: g.name }} icon="portgroup" label={g.name} active={is('portgroup', g.name)} />
                  ))}
              </div>
            </div>
          ))}
        </Group>
        <Group label="Virtual machines" count={s.vms.length}>
          {[...s.vms]
            .sort((a, b) => a.name.localeCompare(b.name))
            .map((v) => (
              <Item key={v.id} to={{ page: 'vm', vm: v.name, tab: 'summary' }} icon={`vm-${v.state}`} label={v.name} active={is('vm', v.name)} testid={`tree-vm-${v.name}`} />
            ))}
          {s.session?.role === 'administrator' && (
            <a class="tree-item tree-action" href={href({ page: 'new-vm' })} data-testid="tree-new-vm">
              <span class="icon icon-add" aria-hidden="true" />
              New virtual machine…
            </a>
          )}
        </Group>
        <Group label="Administration">
          <Item to={{ page: 'users' }} icon="user" label="Users" active={is('users')} testid="tree-users" />
          <Item to={{ page: 'roles' }} icon="role" label="Roles" active={is('roles')} testid="tree-roles" />
          <Item to={{ page: 'tokens' }} icon="token" label="API tokens" active={is('tokens')} testid="tree-tokens" />
          <Item to={{ page: 'password' }} icon="key" label="Change password" active={is('password')} testid="tree-password" />
        </Group>
      </div>
    </nav>
  );
}
