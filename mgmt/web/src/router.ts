// Hash routes (#/vms/web1/console): mgmtd serves one index.html, and a
// reload lands on the same page.

import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { page: 'host' }
  | { page: 'datastore'; ds: string }
  | { page: 'volume'; ds: string; volume: string }
  | { page: 'switch'; sw: string }
  | { page: 'portgroup'; pg: string }
  | { page: 'port'; port: string }
  | { page: 'vm'; vm: string; tab: 'summary' | 'console' | 'performance' }
  | { page: 'new-vm' }
  | { page: 'tasks' }
  | { page: 'events' }
  | { page: 'users' }
  | { page: 'roles' }
  | { page: 'tokens' }
  | { page: 'password' };

const dec = decodeURIComponent;
const enc = encodeURIComponent;

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  try {
    switch (parts[0]) {
      case 'datastores':
        if (parts[2] === 'volumes' && parts[3]) return { page: 'volume', ds: dec(parts[1]), volume: dec(parts[3]) };
        if (parts[1]) return { page: 'datastore', ds: dec(parts[1]) };
        break;
      case 'switches':
        if (parts[1]) return { page: 'switch', sw: dec(parts[1]) };
        break;
      case 'port-groups':
        if (parts[1]) return { page: 'portgroup', pg: dec(parts[1]) };
        break;
      case 'ports':
        if (parts[1]) return { page: 'port', port: dec(parts[1]) };
        break;
      case 'vms':
        if (parts[1]) {
          const tab = parts[2] === 'console' || parts[2] === 'performance' ? parts[2] : 'summary';
          return { page: 'vm', vm: dec(parts[1]), tab };
        }
        break;
      case 'new-vm':
        return { page: 'new-vm' };
      case 'tasks':
        return { page: 'tasks' };
      case 'events':
        return { page: 'events' };
      case 'admin':
        if (parts[1] === 'users' || parts[1] === 'roles' || parts[1] === 'tokens' || parts[1] === 'password') return { page: parts[1] };
        break;
    }
  } catch {
    // A malformed escape: the host page.
  }
  return { page: 'host' };
}

export function href(r: Route): string {
  switch (r.page) {
    case 'host':
      return '#/host';
    case 'datastore':
      return `#/datastores/${enc(r.ds)}`;
    case 'volume':
      return `#/datastores/${enc(r.ds)}/volumes/${enc(r.volume)}`;
    case 'switch':
      return `#/switches/${enc(r.sw)}`;
    case 'portgroup':
      return `#/port-groups/${enc(r.pg)}`;
    case 'port':
      return `#/ports/${enc(r.port)}`;
    case 'vm':
      return `#/vms/${enc(r.vm)}${r.tab === 'summary' ? '' : `/${r.tab}`}`;
    case 'new-vm':
      return '#/new-vm';
    case 'tasks':
      return '#/tasks';
    case 'events':
      return '#/events';
    case 'users':
    case 'roles':
    case 'tokens':
    case 'password':
      return `#/admin/${r.page}`;
  }
}

export function go(r: Route) {
  location.hash = href(r);
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const on = () => setRoute(parse(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}
