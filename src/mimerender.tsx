/**
 * The chart under a `%%burst` cell: JupyterLab draws the kernel's
 * `application/vnd.jupyter-burst.metrics+json` display (jupyter_burst/kernel/metrics_chart.py)
 * with this renderer, through the same chart component as the sidebar. Ranked before
 * images, so the kernel's PNG (for other frontends) is not what JupyterLab picks. The
 * kernel updates the display in place while the job runs; each update re-renders here and
 * the charts take the new points without being rebuilt.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { MetricsCharts } from './chart';
import { Curves, IMetricsBundle, METRICS_MIME_TYPE } from './metrics';

/** Before images (90) and HTML (50), so that JupyterLab draws this rather than the PNG. */
export const METRICS_RENDERER_RANK = 40;

export class MetricsRenderer
  extends ReactWidget
  implements IRenderMime.IRenderer
{
  constructor(private readonly _trans: TranslationBundle) {
    super();
    this.addClass('jp-BurstMetricsOutput');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const bundle = model.data[METRICS_MIME_TYPE] as unknown as
      IMetricsBundle | undefined;
    this._job = bundle?.job ?? null;
    this._curves = bundle?.metrics ?? {};
    // Rendered now (not at the next frame), so the output area shows it once this resolves.
    MessageLoop.sendMessage(this, Widget.Msg.UpdateRequest);
    return this.renderPromise ?? Promise.resolve();
  }

  render(): JSX.Element {
    return (
      <div className="jp-BurstMetricsOutput-body" data-job={this._job ?? ''}>
        <MetricsCharts curves={this._curves} trans={this._trans} />
      </div>
    );
  }

  private _job: string | null = null;
  private _curves: Curves = {};
}

/** The renderer factory JupyterLab registers (index.ts adds it to the rendermime registry). */
export function metricsRendererFactory(
  trans: TranslationBundle
): IRenderMime.IRendererFactory {
  return {
    safe: true, // points and names drawn as text and lines: nothing of the kernel's runs
    mimeTypes: [METRICS_MIME_TYPE],
    defaultRank: METRICS_RENDERER_RANK,
    createRenderer: () => new MetricsRenderer(trans)
  };
}
