import '@testing-library/jest-dom/vitest';
import { cleanup, configure } from '@testing-library/react';
import { afterEach } from 'vitest';

// A page's first render loads its lazy chunk: on a busy machine (CI's two cores shared with a
// Rust build) that can take longer than the default second of `findBy…`/`waitFor`.
configure({ asyncUtilTimeout: 5000 });

afterEach(() => {
  cleanup();
  window.history.replaceState(null, '', '/');
});
