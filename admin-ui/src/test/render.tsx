import { QueryClient } from '@tanstack/react-query';
import { render } from '@testing-library/react';
import type { ReactNode } from 'react';
import { App } from '../App';
import { Providers } from '../providers';

export function testClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: { retry: false, refetchOnWindowFocus: false, refetchInterval: false, gcTime: Infinity },
      mutations: { retry: false },
    },
  });
}

/** The whole app at `path`, as a browser would open it. */
export function renderApp(path: string) {
  window.history.replaceState(null, '', path);
  const client = testClient();
  const utils = render(
    <Providers client={client}>
      <App />
    </Providers>,
  );
  return { ...utils, client };
}

/** A component inside the app's providers (query client, router, session). */
export function renderWithProviders(ui: ReactNode, path = '/') {
  window.history.replaceState(null, '', path);
  const client = testClient();
  return { ...render(<Providers client={client}>{ui}</Providers>), client };
}
