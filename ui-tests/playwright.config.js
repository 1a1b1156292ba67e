/**
 * Galata's configuration with Debian's Chromium (/usr/bin/chromium): Playwright's own browser
 * download fails here (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, make galata), and videos and
 * traces are off, as they need Playwright's ffmpeg download too. JupyterLab runs from the
 * repository's .venv on a port of its own, on 127.0.0.1 only.
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const port = process.env.GALATA_PORT || '8931';
const venv = `${__dirname}/../.venv/bin`;

module.exports = {
  ...baseConfig,
  use: {
    ...baseConfig.use,
    baseURL: `http://127.0.0.1:${port}`,
    video: 'off',
    trace: 'off',
    launchOptions: {
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync'
      ]
    }
  },
  webServer: {
    command: `${venv}/jupyter lab --config jupyter_server_test_config.py --port ${port} --ServerApp.port_retries=0 --ServerApp.ip=127.0.0.1 --allow-root`,
    url: `http://127.0.0.1:${port}/lab`,
    timeout: 120_000,
    reuseExistingServer: false
  },
  retries: 0,
  workers: 1
};
