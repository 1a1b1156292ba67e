import { expect, test } from '@jupyterlab/galata';

test.describe('the jupyter-burst sidebar', () => {
  test('opens from the left bar with its sections', async ({ page }) => {
    const tab = page.locator('.jp-SideBar [title="jupyter-burst"]');
    await expect(tab).toBeVisible();
    await tab.click();
    for (const section of ['Clusters & cost', 'Jobs & logs', 'Checkpoints']) {
      await expect(page.getByText(section, { exact: true })).toBeVisible();
    }
  });

  test('a %burst verb shows its table in the notebook', async ({ page }) => {
    await page.notebook.createNew('verbs.ipynb');
    await page.notebook.setCell(0, 'code', '%load_ext jupyter_burst\n%burst checkpoints');
    await page.notebook.runCell(0);
    const output = await page.notebook.getCellOutputLocator(0);
    await expect(output!).toContainText('burst: no checkpoints');
  });
});
