import { LabIcon } from '@jupyterlab/ui-components';

import burstSvg from '../style/burst.svg';

/**
 * The jupyter-burst icon, shown in the left side bar.
 */
export const burstIcon = new LabIcon({
  name: 'jupyter-burst:burst',
  svgstr: burstSvg
});
